"""Plots (``plot``: functions that take an ``ax``), the paper's figures (``figures``) and the
Pyro loss/gradient evaluation one figure shows (``identities``). The top layer, beside ``app``."""
