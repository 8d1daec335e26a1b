"""The SO-101 rig around aura_node: simulator node, demonstration recorder, closed-loop
evaluation and demo (test and showcase tools; the product node never imports them)."""
