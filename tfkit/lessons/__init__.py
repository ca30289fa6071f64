"""Runnable lessons, each a script and the notebook made from it: `tfkit tutorial` lists them.

The lessons ship inside the package so that an installed tfkit has them too. Each
script is in jupytext's percent format (``# %%`` code cells, ``# %% [markdown]``
prose), read top to bottom and run as a program or as its notebook, not imported;
``jupytext --to ipynb --set-kernel python3 tfkit/lessons/[0-9]*.py`` remakes the
notebooks, and tests/test_tutorials.py fails when one drifts from its script.
"""
