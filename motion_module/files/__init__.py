"""Model files: reading them safely (loading), what they are (spec), converting layouts (convert), the
model folder (model_files), motion LoRAs (lora, lora_keys) and SparseCtrl files (sparsectrl_file).

Imports nothing: each module is imported by name."""
