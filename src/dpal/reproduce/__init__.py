"""``dpal reproduce``: the paper's figures as resumable experiments (one cell per JSON file)."""
