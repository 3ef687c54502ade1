"""The command line (``cli``) and the main job, SVI against CAVI (``demo``). The top layer."""
