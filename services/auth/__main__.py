"""qruntime-auth: run the auth service alone."""

from qruntime_kit.server import run
from qruntime_kit.settings import load_settings

from .component import AuthSettings, build_component


def main(argv=None) -> None:
    settings = load_settings(AuthSettings, argv, prog="qruntime-auth", port=8444)
    run([build_component(settings)], settings)


if __name__ == "__main__":
    main()
