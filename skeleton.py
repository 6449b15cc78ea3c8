"""The skeleton the model reads: which COCO-WholeBody keypoints form each of the four parts, the point each part is
recentred on, and the sizes that follow (nodes, the pose encoder's feature width). Imported by datasets.py (what a
sample keeps), stgcn_layers.py (the part graphs), models.py and preflight.py (sizes)."""

NUM_KEYPOINTS = 133  # COCO-WholeBody
# part -> COCO-WholeBody indices; the anchor a part is recentred on is given by PART_ANCHORS (None: not recentred).
PART_INDICES = {
    "body": [0, 3, 4, 5, 6, 7, 8, 9, 10],
    "left": list(range(91, 112)),
    "right": list(range(112, 133)),
    "face_all": [23, 25, 27, 29, 31, 33, 35, 37, 39] + list(range(83, 91)) + [53],
}
PART_ANCHORS = {"body": None, "left": 91, "right": 112, "face_all": 53}
PARTS = ("body", "left", "right", "face_all")  # the order of the parts' features, in the pose encoder and the branch
POSE_NODES = sum(len(indices) for indices in PART_INDICES.values())  # 9 + 21 + 21 + 18
PART_FEATURES = 256  # channels of each part's ST-GCN output
POSE_FEATURES = len(PARTS) * PART_FEATURES  # the four parts' features side by side, what pose_proj reads
DEFAULT_FRAMES = 256  # frames read per video by default (--max_length)
