"""Videos in and out: video input (input, frame_selection), encoders and files (encoders, files,
metadata, output_options), publishing a request's videos (publish, upload, http_auth) and frame
interpolation (interpolation, rife, film).

Imports nothing: each module is imported by name."""
