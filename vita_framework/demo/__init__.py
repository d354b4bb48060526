"""A browser demo over any composition: ``python -m vita_framework.demo <the CLI's overrides>``.

Modules: :mod:`~.options` (the ``demo`` config node), :mod:`~.session` (a tab's conversation and uploads),
:mod:`~.chat` (a chat turn as a job of the server's scheduler, so tabs are batched as the server batches
requests), :mod:`~.panels` (the composition and last-answer panel), :mod:`~.app` (the Gradio page),
:mod:`~.run` (the Hydra job). Gradio comes with the ``demo`` extra (``pip install -e '.[demo]'``) and is imported
only when the page is built.
"""
