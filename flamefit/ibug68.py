"""The one table of iBUG-68 (300-W / dlib order) landmark index groups, 0-based.

Zero dependencies on purpose (a base module: everything may import it, it imports nothing from flamefit).

Sides are the SUBJECT's (as in dlib/imutils): the "right" eye 36-41 is the subject's right, which is on the
image's left in a frontal photo. Groups are ``range`` objects: immutable, and usable directly as an index list by
numpy (``a[JAW]``) and torch (``t[:, JAW]``). Do not turn them into tuples for indexing: ``t[(0, 1, 2)]`` indexes
three dimensions in torch and numpy, not three points.
"""

from __future__ import annotations

N_POINTS = 68

# Contour (jaw line), 0 at the subject's right ear to 16 at the left, 8 the chin. In photos it follows the
# visible silhouette, so it is not a fixed mesh point set.
JAW = range(0, 17)
CONTOUR = JAW
CHIN = 8

RIGHT_BROW = range(17, 22)
LEFT_BROW = range(22, 27)
BROWS = range(17, 27)

NOSE_BRIDGE = range(27, 31)  # 27 top (between the eyes) to 30 the tip
NOSE_BASE = range(31, 36)  # 31 to 35 along the nostrils' base, 33 the subnasale
NOSE = range(27, 36)
NOSE_TIP = 30

RIGHT_EYE = range(36, 42)  # 36 outer corner, 39 inner corner
LEFT_EYE = range(42, 48)  # 42 inner corner, 45 outer corner
EYES = range(36, 48)
# Upper and lower lid points, paired column by column (upper[i] lies above lower[i]).
RIGHT_EYE_UPPER, RIGHT_EYE_LOWER = range(37, 39), range(41, 39, -1)
LEFT_EYE_UPPER, LEFT_EYE_LOWER = range(43, 45), range(47, 45, -1)

OUTER_LIPS = range(48, 60)  # 48 right corner, 54 left corner
INNER_LIPS = range(60, 68)  # 60 right corner, 64 left corner
MOUTH = range(48, 68)
# Inner-lip upper and lower points, paired column by column (61 above 67, 62 above 66, 63 above 65).
INNER_LIP_UPPER, INNER_LIP_LOWER = range(61, 64), range(67, 64, -1)

# Everything but the contour: the 51 points that are fixed on the face surface ("static" landmarks).
INNER = range(17, 68)
STATIC_51 = INNER

# NME normalisation (300-W inter-ocular distance): the outer eye corners.
OUTER_EYE_CORNERS = (36, 45)

# Coarse groups (name -> slice) for per-region error reports.
GROUPS: dict[str, slice] = {
    "jaw": slice(0, 17),
    "brows": slice(17, 27),
    "nose": slice(27, 36),
    "eyes": slice(36, 48),
    "mouth": slice(48, 68),
}

# Horizontal mirror: point i of a flipped image is point MIRROR[i] of the original. A permutation; index with
# ``list(MIRROR)`` (see the module note on tuples).
MIRROR: tuple[int, ...] = (
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,  # jaw
    26, 25, 24, 23, 22, 21, 20, 19, 18, 17,  # brows
    27, 28, 29, 30,  # nose bridge (on the midline)
    35, 34, 33, 32, 31,  # nose base
    45, 44, 43, 42, 47, 46,  # right eye <- left eye
    39, 38, 37, 36, 41, 40,  # left eye <- right eye
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,  # outer lips
    64, 63, 62, 61, 60, 67, 66, 65,  # inner lips
)
