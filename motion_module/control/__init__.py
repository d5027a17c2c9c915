"""Control over the frames: ControlNet units and per-window hints (controlnet), their keyframes
(cn_keyframes), SparseCtrl's temporal layers (sparsectrl).

Imports nothing: each module is imported by name."""
