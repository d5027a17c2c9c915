// AnimateDiff UI niceties only (nothing the API relies on): a hint for AnimateDiff-Lightning's recipe
// when AnimateDiff is on and a Lightning-sized step count (<= 8) is chosen.
(function () {
    const TEXT = "Few steps: for AnimateDiff-Lightning use sampler Euler, Schedule type \"SGM Uniform\" and CFG scale 1.";

    function parts(tab) {
        const root = gradioApp();
        return {
            enable: root.querySelector(`#script_${tab}_animatediff_enable-checkbox input[type=checkbox]`) ||
                root.querySelector(`#script_${tab}_animatediff_enable input[type=checkbox]`),
            steps: root.querySelector(`#${tab}_steps input[type=number]`),
            hint: root.querySelector(`#script_${tab}_animatediff_hint`),
        };
    }

    function update(tab) {
        const {enable, steps, hint} = parts(tab);
        if (!enable || !steps || !hint) return;
        const text = enable.checked && Number(steps.value) <= 8 ? TEXT : "";
        // write only on change: a write is a DOM mutation, which fires onUiUpdate again
        if (hint.textContent !== text) hint.textContent = text;
    }

    function listen(tab) {
        const root = gradioApp();
        const inputs = [...root.querySelectorAll(`#${tab}_steps input`),
            ...root.querySelectorAll(`#script_${tab}_animatediff_enable-checkbox input, #script_${tab}_animatediff_enable input`)];
        inputs.forEach((input) => {
            input.addEventListener("input", () => update(tab));
            input.addEventListener("change", () => update(tab));
        });
        update(tab);
    }

    onUiLoaded(function () {
        listen("txt2img");
        listen("img2img");
    });
    onUiUpdate(function () {
        update("txt2img");
        update("img2img");
    });
})();
