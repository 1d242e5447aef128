"""qruntime-programs: run the programs service alone."""

from qruntime_kit.server import run
from qruntime_kit.settings import load_settings

from .component import ProgramsSettings, build_component


def main(argv=None) -> None:
    settings = load_settings(ProgramsSettings, argv, prog="qruntime-programs", port=8445)
    run([build_component(settings)], settings)


if __name__ == "__main__":
    main()
