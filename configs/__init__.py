"""The agents' configs, ``<agent>.yml``, shipped as package data of ``ebmm_rl.configs`` (see :mod:`ebmm_rl.runs.config`)."""
