"""The cut-out algorithm in small pieces.

backdrop (the backdrop per pixel), background (smooth surfaces, colour distance), alpha (the
matte: border fill, enclosed regions, specks), edges (soft edges with their colours), translucent
(veils and glasses), holes and holes_file (numbering and deciding enclosed regions; holes.toml),
colour (decontamination, bleeding, trim), matting (optional pymatting refinement), review
(review.png), memory (malloc thresholds). `datakit.cutout.cut` puts them together for one image;
`datakit.stages.cutout` runs them over a folder.
"""
