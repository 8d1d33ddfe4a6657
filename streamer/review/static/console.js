// MotionGuard review console: keyboard shortcuts. a = AI-generated, r = Real, c = Can't tell, n = next item.
// Bound once on the document, so it keeps working when htmx swaps the page body.
(function () {
  "use strict";
  var keys = { a: "decide-ai", r: "decide-real", c: "decide-unsure", n: "next" };
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    var target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT" || target.isContentEditable)) return;
    var id = keys[event.key];
    if (!id) return;
    var button = document.getElementById(id);
    if (button && !button.disabled) {
      event.preventDefault();
      button.click();
    }
  });
})();
