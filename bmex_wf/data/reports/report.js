/* bmex-wf report behaviour: collapsible panels, tabs and menus (no external libraries). */
(function () {
  "use strict";
  function closeMenus(except) {
    document.querySelectorAll(".dropdown-menu.show").forEach(function (menu) {
      if (menu !== except) { menu.classList.remove("show"); }
    });
  }
  document.addEventListener("click", function (event) {
    var trigger = event.target.closest("[data-bs-toggle]");
    if (!trigger) { closeMenus(null); return; }
    var kind = trigger.getAttribute("data-bs-toggle");
    if (kind === "collapse") {
      var target = document.querySelector(trigger.getAttribute("data-bs-target"));
      if (target) {
        var shown = target.classList.toggle("show");
        trigger.classList.toggle("collapsed", !shown);
        trigger.setAttribute("aria-expanded", shown ? "true" : "false");
      }
    } else if (kind === "tab") {
      var pane = document.querySelector(trigger.getAttribute("data-bs-target"));
      var tabs = trigger.closest(".nav-tabs");
      if (tabs) {
        tabs.querySelectorAll(".nav-link").forEach(function (t) { t.classList.remove("active"); });
      }
      if (pane && pane.parentElement) {
        Array.prototype.forEach.call(pane.parentElement.children, function (p) {
          p.classList.remove("active", "show");
        });
        pane.classList.add("active", "show");
      }
      trigger.classList.add("active");
    } else if (kind === "dropdown") {
      event.preventDefault();
      var menu = trigger.parentElement.querySelector(".dropdown-menu");
      closeMenus(menu);
      if (menu) { menu.classList.toggle("show"); }
    }
  });
  /* The participant summary starts unfolded. */
  document.querySelectorAll("#summary-meta .accordion-collapse").forEach(function (el) {
    el.classList.add("show");
    var button = document.querySelector("[data-bs-target='#" + el.id + "']");
    if (button) { button.classList.remove("collapsed"); }
  });
})();
function toggle(id) {
  var element = document.getElementById(id);
  element.style.display = element.style.display === "block" ? "none" : "block";
}
