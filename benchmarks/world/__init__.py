"""The miniature world of the cure benchmark: pictures, models, training scripts, quality gates."""
