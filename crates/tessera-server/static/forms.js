// tessera: progressive enhancement for the forms. Adds a "Show" button to
// every password field so people can check what they typed. The forms work
// the same without this script; it uses no inline code, so the strict
// Content-Security-Policy allows it.
(function () {
  "use strict";

  function addToggle(input) {
    var row = document.createElement("div");
    row.className = "password-row";
    input.parentNode.insertBefore(row, input);
    row.appendChild(input);

    var button = document.createElement("button");
    button.type = "button";
    button.className = "reveal";
    button.textContent = "Show";
    button.setAttribute("aria-label", "Show password");
    button.setAttribute("aria-pressed", "false");
    if (input.id) button.setAttribute("aria-controls", input.id);
    row.appendChild(button);

    function show(visible) {
      input.type = visible ? "text" : "password";
      button.textContent = visible ? "Hide" : "Show";
      button.setAttribute("aria-pressed", visible ? "true" : "false");
    }
    button.addEventListener("click", function () {
      show(input.type === "password");
    });
    // Never submit (or let a password manager save) while shown as text.
    if (input.form) {
      input.form.addEventListener("submit", function () {
        show(false);
      });
    }
  }

  function enhance() {
    var inputs = document.querySelectorAll("input[type=password]");
    for (var i = 0; i < inputs.length; i++) addToggle(inputs[i]);
    document.documentElement.classList.add("js");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", enhance);
  } else {
    enhance();
  }
})();
