"""Hydra config options shipped by vita-example-plugins (``projector/``, ``fusion/``, ``depth/``).

A package (not a plain directory) so that Hydra can read it as ``pkg://vita_example_plugins.conf`` from any
install layout: site-packages, ``pip install --target`` or an editable install.
"""
