"""The A1111 tier's host-independent API checks (tests/webui/test_animatediff_api.py), run unchanged on Forge: the
same request gives the same kind of result on both hosts. Each is collected here under its own name and uses this
tier's ``api`` fixture (Forge with the tiny motion modules). Checks that need A1111 itself (its options, its
ControlNet, its interrupt timing) stay there; Forge's own versions are in test_forge_animatediff.py. Not here: the
infotext paste check, because the API's ``infotext`` field fails in Forge itself for any infotext, a plain image's
too (``modules/api/api.py`` ``get_field_value``: "isinstance() argument 2 cannot be a parameterized generic")."""

from __future__ import annotations

from tests.webui.test_animatediff_api import (  # noqa: F401 - collected by pytest from this module
    test_bad_requests_fail_with_a_named_field,
    test_closed_loop_a_plays_a_short_clip_forward_then_backward,
    test_closed_loop_prompt_travel_wraps,
    test_closed_loop_windows_wrap_around_the_end,
    test_every_format_decodes_and_infotext_round_trips,
    test_format_as_string_is_accepted,
    test_freeinit_runs_more_passes_and_changes_the_video,
    test_freenoise_reschedules_the_initial_noise,
    test_lightning_recipe,
    test_motion_module_window_mode,
    test_motion_scale_and_loading_without_the_cache,
    test_motion_scale_keyframes,
    test_n_iter_two_gives_two_videos_with_their_own_seeds,
)
