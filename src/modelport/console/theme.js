// Light or dark: the visitor's last choice, else the system's preference.
(function () {
  var saved = null;
  try { saved = localStorage.getItem("modelport.theme"); } catch (e) { /* storage off */ }
  var dark = saved ? saved === "dark"
    : window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
})();
