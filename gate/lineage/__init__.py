"""Lineage evidence from the weights. This release implements tier 0: exact tensor matches."""
