"""The engine's core: the motion module (model), how it goes into a UNet (injection, patch) and runs in a
sampler (sampling, schedules, prompts, motion scale, FreeInit, FreeNoise, img2img latents), the plan of a
run (run) and the request session a host drives (session, request_guard, nesting).

Imports nothing: each module is imported by name."""
