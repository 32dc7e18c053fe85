"""Caption rewriting rules, tag statistics and caption diffs (`datakit tags ...`).

parse.py (weights, emphasis) -> rules.py (RULES.toml) -> engine.py (apply rules to one caption)
-> rewrite.py (the stage); stats.py, tokens.py (CLIP token counts) and diff.py inspect captions.
"""
