"""Example vita_framework plugins, installed as their own distribution (``vita-example-plugins``).

Everything here reaches the framework through the public hooks and entry points only: the hook module is
:mod:`vita_example_plugins.plugin` and the Hydra options live in :mod:`vita_example_plugins.conf`.
"""

__version__ = "0.1.0"
