"""qruntime-jobs: the jobs service on its own."""

from __future__ import annotations

from qruntime_kit.server import run
from qruntime_kit.settings import load_settings

from .component import build_component
from .settings import JobsSettings


def main(argv=None) -> None:
    settings = load_settings(JobsSettings, argv, prog="qruntime-jobs")
    run([build_component(settings)], settings)


if __name__ == "__main__":
    main()
