"""``python -m vita_framework +vision=internvit +audio=none [key=value ...]``: the Hydra app.

Composition, ``--help`` and ``--cfg job`` import no torch: the job body (``cli.run_job``) is imported only
when a job runs.
"""

from __future__ import annotations

import hydra

from .searchpath import register_search_path

register_search_path()


@hydra.main(version_base="1.3", config_path="pkg://vita_framework.conf", config_name="config")
def app(cfg) -> float | None:
    from .cli import run_job

    return run_job(cfg)


def main() -> None:
    import sys

    from . import overrides
    from .config import compose

    problem = _argv_problem(sys.argv[1:])
    if problem is None:
        sys.argv[1:] = overrides.normalise(sys.argv[1:])
        problem = overrides.precheck(sys.argv[1:], compose) or _output_dir_problem(sys.argv[1:])
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    app()


def _argv_problem(args: list[str]) -> str | None:
    """A non-UTF-8 argument (Python decodes its bytes to lone surrogates, which Hydra cannot parse)."""
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as exc:
            key, sep, _ = arg.partition("=")
            name = f"'{key.lstrip('+~')}'" if sep else "an argument"
            code, at = ord(arg[exc.start]), exc.start - (len(key) + 1 if sep and exc.start > len(key) else 0)
            byte = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"character {arg[exc.start]!r}"
            return (f"{name} on the command line is not valid UTF-8 text ({byte} at position {at}); "
                    "re-encode it as UTF-8 (a Latin-1 terminal or script? e.g. iconv -f latin1 -t utf-8)")
    return None


def _output_dir_problem(args: list[str]) -> str | None:
    """The output directory given on the command line (``hydra.run.dir``, ``hydra.sweep.dir`` with ``-m``) must be
    writable: Hydra creates it before the job, and its failure there is a raw traceback."""
    from .overrides import _FLAGS_WITHOUT_RUN

    if any(a in _FLAGS_WITHOUT_RUN or a.startswith(("--cfg", "--info", "-c=")) for a in args):
        return None
    key = "hydra.sweep.dir" if any(a in ("-m", "--multirun") for a in args) else "hydra.run.dir"
    values = [a.split("=", 1)[1] for a in args if "=" in a and a.split("=", 1)[0].lstrip("+~") == key]
    value = values[-1].strip().strip("'\"") if values else ""
    if not value or "${" in value:  # not given, or interpolated (the default's ${now:...}): Hydra resolves it
        return None
    from .cli import output_dir_problem

    return output_dir_problem(value, key)


if __name__ == "__main__":
    main()
