// gc-status widget: tells the framing portal how tall the widget is, so it can size the
// iframe. Messages go only to the origins configured in GC_STATUS_FRAME_ANCESTORS (a message
// addressed to another origin is dropped by the browser), never to "*".
(function () {
  if (window.parent === window) return;
  var last = 0;
  function report() {
    var widget = document.getElementById("gc-widget");
    if (!widget) return;
    var origins = (widget.getAttribute("data-parent-origins") || "").split(" ");
    var height = Math.ceil(document.documentElement.scrollHeight);
    if (height === last) return;
    last = height;
    origins.forEach(function (origin) {
      if (origin) window.parent.postMessage({ type: "gc-status:height", height: height }, origin);
    });
  }
  if ("ResizeObserver" in window) new ResizeObserver(report).observe(document.documentElement);
  window.addEventListener("load", report);
  setInterval(report, 2000);
  report();
})();
