"""Benchmark command lines: the memory core's cost (:mod:`.memory`), the agents' cost (:mod:`.recurrent`) and where
an agent's time goes on a device (:mod:`.profile`); :mod:`.common` holds what they share."""
