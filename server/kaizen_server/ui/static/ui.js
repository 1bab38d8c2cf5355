// Keyboard-first review queue: digits score the first trace, c/x focus its comment and
// correction, j skips it. No other page uses this script.
document.addEventListener("keydown", function (event) {
  var form = document.querySelector(".review-item .label-form");
  if (!form || event.ctrlKey || event.metaKey || event.altKey) return;
  var target = event.target;
  if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) {
    if (event.key === "Escape") target.blur();
    return;
  }
  if (/^[0-9]$/.test(event.key)) {
    form.querySelector(".score").value = (Number(event.key) / 9).toFixed(3);
    event.preventDefault();
    form.requestSubmit();
  } else if (event.key === "c") {
    form.querySelector(".comment").focus(); event.preventDefault();
  } else if (event.key === "x") {
    form.querySelector(".correction").focus(); event.preventDefault();
  } else if (event.key === "j") {
    var item = form.closest(".review-item");
    if (item) item.remove();
  }
});
