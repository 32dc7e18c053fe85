"""Pieces of the composite stage: where the subject goes, how it is blended, what the caption says.

config.py      the stage's options, their parsed forms, what is fingerprinted, and its result
plan.py        which subject goes on which background: one task per composite
worker.py      one composite start to finish (a pool worker): load, place, render, caption, write
placement.py   framing mix and the subject's scale/position in the frame
blending.py    premultiplied resampling, feathering, light wrap, shadows, harmonisation, grain, artefacts
sources.py     finding, checking and loading cut-outs and backgrounds
captions.py    the composite's caption from the subject's and the background's tags
horizon.py     the ground line of a plain background, estimated from its horizon / floor line
contact_sheet.py  the grid of thumbnails a person looks at
"""
