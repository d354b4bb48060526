"""``python -m vita_framework.train [key=value ...]``: train a bundle (see :mod:`vita_training`).

Training lives in its own package, ``vita_training``, outside the inference import path: nothing the CLI, the
API or the plugins import reaches it. This module only forwards the command.
"""

from __future__ import annotations

if __name__ == "__main__":
    from vita_training.app import main

    main()
