"""Pieces of the composite stage: where the subject goes, how it is blended, what the caption says.

placement.py   framing mix and the subject's scale/position in the frame
blending.py    premultiplied resampling, feathering, light wrap, shadows, harmonisation, grain, artefacts
sources.py     loading and checking cut-outs and backgrounds
captions.py    the composite's caption from the subject's and the background's tags
horizon.py     the ground line of a plain background, estimated from its horizon / floor line
contact_sheet.py  the grid of thumbnails a person looks at
"""
