"""Closed contours of MediaPipe's face mesh, in order (for polygons: masks, overlays).

The loops follow MediaPipe's published connection sets (``mediapipe.python.solutions.face_mesh_connections``);
a test checks every step of every loop against them. Directions are as seen in the image: the subject's right
eye/brow is on the image's left. The nostril loops are flamefit's own: the nostril rim between the alar base,
the nose base chain and the columella, picked on MediaPipe's canonical face.
"""

from __future__ import annotations

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
RIGHT_EYE = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
LEFT_EYE = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
# brows: upper contour then lower contour back (the connection sets hold the two open chains)
RIGHT_BROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
LEFT_BROW = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
LIPS_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
LIPS_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
RIGHT_NOSTRIL = (98, 240, 75, 60, 20, 242, 141, 97)
LEFT_NOSTRIL = (327, 460, 305, 290, 250, 462, 370, 326)
RIGHT_IRIS = (469, 470, 471, 472)  # centre 468
LEFT_IRIS = (474, 475, 476, 477)  # centre 473

CONTOURS: dict[str, tuple[int, ...]] = {
    "face_oval": FACE_OVAL,
    "right_eye": RIGHT_EYE,
    "left_eye": LEFT_EYE,
    "right_brow": RIGHT_BROW,
    "left_brow": LEFT_BROW,
    "lips_outer": LIPS_OUTER,
    "lips_inner": LIPS_INNER,
    "right_nostril": RIGHT_NOSTRIL,
    "left_nostril": LEFT_NOSTRIL,
}
