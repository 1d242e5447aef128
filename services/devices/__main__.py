"""qruntime-devices: run the devices service alone."""

from qruntime_kit.server import run
from qruntime_kit.settings import load_settings

from .component import DevicesSettings, build_component


def main(argv=None) -> None:
    settings = load_settings(DevicesSettings, argv, prog="qruntime-devices", port=8447)
    run([build_component(settings)], settings)


if __name__ == "__main__":
    main()
