"""What fits return and how they are read: ``GMMFit`` (and its save / load), ``VBFit``,
``SelectionTable``, the Hungarian matcher behind ``align`` and the NUTS relabelling
(``matching``), every ArviZ call (``arviz_io``) and every text rendering (``text``).
Imports ``core`` only."""
