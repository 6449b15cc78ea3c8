"""Spatial-temporal graph convolution (ST-GCN) over the four skeleton parts (Uni-Sign, ICLR 2025; Yan et al., AAAI 2018).

Module and child names are the released checkpoint's key names: keep them.
"""
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from skeleton import PART_FEATURES, PART_INDICES, PARTS

HAND_EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11),
              (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20)]
BODY_EDGES = [(0, 1), (0, 2), (0, 3), (0, 4), (3, 5), (5, 7), (4, 6), (6, 8)]
FACE_EDGES = ([(i, i + 1) for i in range(8)] + [(i, i + 1) for i in range(9, 16)] + [(16, 9)]
              + [(17, i) for i in range(17)])

# part -> (nodes, edges): node v of a part is the keypoint skeleton.PART_INDICES[part][v], the one list of them.
PART_GRAPHS = {part: (len(PART_INDICES[part]), edges) for part, edges in
               (("body", BODY_EDGES), ("left", HAND_EDGES), ("right", HAND_EDGES), ("face_all", FACE_EDGES))}


def graph_adjacency(num_nodes, edges):
    """Partitioned, normalised adjacency of the 'distance' strategy with max_hop 1, shape (2, V, V).

    With A = I + E (E the symmetric edge matrix) and D_jj = sum_i A_ij (column degree),
    AD = A D^-1; partition 0 keeps the self links of AD (hop 0), partition 1 its edges (hop 1).
    Node w then averages over its neighbourhood: sum_v AD[v, w] x_v = mean of x over N(w).
    """
    edge_matrix = np.zeros((num_nodes, num_nodes), dtype=np.float32)
    for i, j in edges:
        edge_matrix[i, j] = edge_matrix[j, i] = 1.0
    adjacency = edge_matrix + np.eye(num_nodes, dtype=np.float32)
    normalised = adjacency / adjacency.sum(axis=0, keepdims=True)
    hop0 = normalised * np.eye(num_nodes, dtype=np.float32)
    hop1 = normalised * edge_matrix
    return torch.from_numpy(np.stack([hop0, hop1]))


class GraphConv(nn.Module):
    """Spatial graph convolution: y_w = sum_k sum_v A[k, v, w] (W_k x_v + b_k), then BatchNorm and ReLU.

    `A` is a learnable copy of the graph (checkpoint key `gcn.A`).
    """

    def __init__(self, in_channels, out_channels, adjacency):
        super().__init__()
        self.num_partitions = adjacency.shape[0]
        self.conv = nn.Conv2d(in_channels, out_channels * self.num_partitions, kernel_size=1)
        self.A = nn.Parameter(adjacency.clone())
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        n, _, t, v = x.shape
        x = self.conv(x).view(n, self.num_partitions, -1, t, v)
        x = torch.einsum("nkctv,kvw->nctw", x, self.A)
        return self.relu(self.bn(x))


class STGCNBlock(nn.Module):
    """ReLU(tcn(gcn(x)) + residual(x)).

    tcn: Conv2d(out, out, (kt, 1)) + BatchNorm2d when kt > 1, else identity (no keys). The reference
    also appends Dropout(0), an identity without keys, left out here.
    residual: identity (no keys) when in == out, else Conv2d 1x1 + BatchNorm2d.
    """

    def __init__(self, in_channels, out_channels, adjacency, temporal_kernel):
        super().__init__()
        self.gcn = GraphConv(in_channels, out_channels, adjacency)
        if temporal_kernel > 1:
            padding = ((temporal_kernel - 1) // 2, 0)
            self.tcn = nn.Sequential(nn.Conv2d(out_channels, out_channels, (temporal_kernel, 1), padding=padding),
                                     nn.BatchNorm2d(out_channels))
        else:
            self.tcn = nn.Identity()
        if in_channels == out_channels:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1),
                                          nn.BatchNorm2d(out_channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.tcn(self.gcn(x)) + self.residual(x))


def spatial_stack(adjacency):
    """`gcn_modules[part]`: layer0_0 64->64, layer1_0 64->128, layer2_0 128->256, all with kt = 1."""
    return nn.Sequential(OrderedDict([
        ("layer0_0", STGCNBlock(64, 64, adjacency, 1)),
        ("layer1_0", STGCNBlock(64, 128, adjacency, 1)),
        ("layer2_0", STGCNBlock(128, PART_FEATURES, adjacency, 1)),
    ]))


def temporal_stack(adjacency):
    """`fusion_gcn_modules[part]`: layer0_0..layer0_2, 256->256 with kt = 5."""
    return nn.Sequential(OrderedDict([(f"layer0_{i}", STGCNBlock(PART_FEATURES, PART_FEATURES, adjacency, 5))
                                      for i in range(3)]))


def build_part_modules():
    """Return (proj_linear, gcn_modules, fusion_gcn_modules) ModuleDicts keyed body/left/right/face_all.

    Left and right are the SAME modules (shared weights); the state dict still lists both names.
    """
    proj, spatial, temporal = {}, {}, {}
    for part in ("body", "left", "face_all"):
        num_nodes, edges = PART_GRAPHS[part]
        adjacency = graph_adjacency(num_nodes, edges)
        proj[part] = nn.Linear(3, 64)
        spatial[part] = spatial_stack(adjacency)
        temporal[part] = temporal_stack(adjacency)
    order = ("body", "left", "right", "face_all")
    alias = {"right": "left"}
    return tuple(nn.ModuleDict(OrderedDict((p, modules[alias.get(p, p)]) for p in order))
                 for modules in (proj, spatial, temporal))


# Node of the body part whose (detached) feature is added to each other part after the spatial stack:
# body indices are COCO 0,3,4,5,6,7,8,9,10, so -2 is the left wrist (9), -1 the right wrist (10), 0 the nose.
BODY_ANCHOR = {"left": -2, "right": -1, "face_all": 0}


def encode_parts(pose, proj_linear, gcn_modules, fusion_gcn_modules):
    """Per-part ST-GCN features.

    pose: dict part -> (B, T, V, 3). Returns dict part -> (B, T, 256), parts in the order of PARTS.
    x = proj_linear(part) -> (B, 64, T, V) -> spatial stack; hands and face then add the body's anchor
    node (detached), broadcast over their nodes; -> temporal stack -> mean over nodes.
    """
    spatial = {}
    for part in PARTS:
        x = proj_linear[part](pose[part]).permute(0, 3, 1, 2)  # (B, 64, T, V)
        spatial[part] = gcn_modules[part](x.contiguous())
    body = spatial["body"].detach()
    features = {}
    for part in PARTS:
        x = spatial[part]
        if part in BODY_ANCHOR:
            x = x + body[..., BODY_ANCHOR[part]].unsqueeze(-1)
        features[part] = fusion_gcn_modules[part](x).mean(dim=-1).transpose(1, 2)  # (B, T, 256)
    return features
