// AnimateDiff UI niceties only (nothing the API relies on): a hint for AnimateDiff-Lightning's recipe
// when AnimateDiff is on and a Lightning-sized step count (<= 8) is chosen.
(function () {
    function hintFor(tab) {
        const root = gradioApp();
        const enable = root.querySelector(`#script_${tab}_animatediff_enable input[type=checkbox]`) ||
            root.querySelector(`#script_${tab}_animatediff_enable-checkbox`);
        const steps = root.querySelector(`#${tab}_steps input[type=number]`);
        const hint = root.querySelector(`#${tab}_script_container #animatediff-lightning-hint`) ||
            root.querySelector('#animatediff-lightning-hint');
        if (!enable || !steps || !hint) return;
        const few = Number(steps.value) <= 8;
        hint.textContent = enable.checked && few
            ? "Few steps: for AnimateDiff-Lightning use sampler Euler, Schedule type \"SGM Uniform\" and CFG scale 1."
            : "";
    }
    onUiUpdate(function () {
        hintFor("txt2img");
        hintFor("img2img");
    });
})();
