"""The cut-out algorithm in small pieces: backdrop model, alpha, colour (decontamination, bleeding, trim), matting.

`datakit.cutout.cut` puts them together for one image; `datakit.stages.cutout` runs them over a folder.
"""
