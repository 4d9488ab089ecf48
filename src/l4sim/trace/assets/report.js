/* l4sim run report: draws the charts from the JSON the page carries (window.L4SIM).
   ECharts draws; this file only says what to draw and wires the clicks. */
(function () {
  "use strict";
  var D = window.L4SIM;
  var charts = {};
  var COLORS = {
    running: "#2e7d32", ready: "#a5d6a7", send_wait: "#ef6c00", receive_wait: "#1e88e5",
    canceled: "#8e24aa", timed_out: "#6d4c41", receive_in_progress: "#00897b",
    ipc_transfer: "#00acc1", inactive: "#bdbdbd"
  };
  function color(state) { return COLORS[state] || "#9e9e9e"; }
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"}[c];
    });
  }

  // --- the details panel: what was clicked -------------------------------------------
  function show(title, fields) {
    var el = document.getElementById("details");
    var rows = Object.keys(fields).map(function (k) {
      var v = fields[k];
      if (typeof v === "object") { v = JSON.stringify(v); }
      return "<tr><th>" + esc(k) + "</th><td>" + esc(v) + "</td></tr>";
    }).join("");
    el.innerHTML = "<h3>" + esc(title) + "</h3><table>" + rows + "</table>";
    el.classList.add("filled");
  }
  function showMessage(i) {
    var m = D.messages[i];
    if (!m) { return; }
    show("message " + (i + 1) + ": " + m.title, Object.assign({"time (µs)": m.t}, m.detail));
    var marks = document.querySelectorAll(".seq-msg.selected");
    Array.prototype.forEach.call(marks, function (e) { e.classList.remove("selected"); });
    var own = document.querySelector(".seq-msg[data-msg='" + i + "']");
    if (own) { own.classList.add("selected"); }
  }
  function showThread(i) {
    var th = D.threads[i];
    show("thread " + th.name, th);
    var rows = document.querySelectorAll("#threads tr.thread");
    Array.prototype.forEach.call(rows, function (r) {
      r.classList.toggle("selected", r.getAttribute("data-thread") === String(i));
    });
    var tl = charts.timeline;
    if (tl) {
      tl.dispatchAction({type: "downplay", seriesIndex: 0});
      var idx = [];
      D.slices.forEach(function (s, j) { if (s[0] === i) { idx.push(j); } });
      tl.dispatchAction({type: "highlight", seriesIndex: 0, dataIndex: idx});
    }
  }
  window.l4simShowMessage = showMessage;
  window.l4simShowThread = showThread;

  // --- the timeline: a row per thread, a bar per state, an arrow per message ------------
  function timeline() {
    var el = document.getElementById("timeline");
    if (!el || !D.slices.length) { return; }
    el.style.height = Math.max(220, 60 + 34 * D.threads.length + 60) + "px";
    var chart = echarts.init(el, null, {renderer: "canvas"});
    charts.timeline = chart;
    function slice(params, api) {
      var row = api.value(0);
      var a = api.coord([api.value(1), row]);
      var b = api.coord([api.value(2), row]);
      var h = api.size([0, 1])[1] * 0.55;
      var cs = params.coordSys;
      var shape = echarts.graphic.clipRectByRect(
        {x: a[0], y: a[1] - h / 2, width: Math.max(b[0] - a[0], 0.5), height: h},
        {x: cs.x, y: cs.y, width: cs.width, height: cs.height});
      return shape && {type: "rect", shape: shape, style: api.style(),
                       emphasis: {style: {stroke: "#000", lineWidth: 2}}};
    }
    function arrow(params, api) {
      var cs = params.coordSys;
      var p = api.coord([api.value(1), api.value(2)]);
      var q = api.coord([api.value(1), api.value(3)]);
      if (p[0] < cs.x || p[0] > cs.x + cs.width) { return null; }
      var h = api.size([0, 1])[1] * 0.3;
      var down = q[1] > p[1] ? 1 : -1;
      var y1 = p[1] + down * h, y2 = q[1] - down * h;
      var kind = D.messages[api.value(0)].kind;
      var stroke = kind === "reply" ? "#555" : "#c62828";
      return {type: "group", children: [
        {type: "line", shape: {x1: p[0], y1: y1, x2: q[0], y2: y2},
         style: {stroke: stroke, lineWidth: 1.4, lineDash: kind === "reply" ? [4, 3] : null}},
        {type: "polygon", shape: {points: [[q[0], y2], [q[0] - 4, y2 - down * 7], [q[0] + 4, y2 - down * 7]]},
         style: {fill: stroke}}
      ]};
    }
    chart.setOption({
      animation: false,
      tooltip: {confine: true, formatter: function (p) {
        if (p.seriesIndex === 0) {
          var s = D.slices[p.dataIndex];
          return esc(D.threads[s[0]].name) + ": <b>" + esc(s[3]) + "</b><br>" +
            s[1].toFixed(3) + " – " + s[2].toFixed(3) + " µs";
        }
        var m = D.messages[p.dataIndex];
        return esc(m.from) + " → " + esc(m.to) + ": <b>" + esc(m.title) + "</b><br>at " +
          m.t.toFixed(3) + " µs";
      }},
      grid: {left: 150, right: 40, top: 20, bottom: 70},
      xAxis: {type: "value", name: "µs", min: D.start_us, max: D.end_us, axisLabel: {formatter: "{value}"}},
      yAxis: {type: "category", inverse: true, data: D.threads.map(function (t) { return t.name; }),
              axisLabel: {fontSize: 12}},
      dataZoom: [{type: "slider", xAxisIndex: 0, filterMode: "weakFilter", bottom: 15},
                 {type: "inside", xAxisIndex: 0, filterMode: "weakFilter"}],
      series: [
        {type: "custom", name: "states", renderItem: slice, encode: {x: [1, 2], y: 0},
         data: D.slices.map(function (s) { return {value: s, itemStyle: {color: color(s[3])}}; })},
        {type: "custom", name: "messages", renderItem: arrow, encode: {x: 1, y: [2, 3]}, z: 10,
         data: D.messages.map(function (m, i) { return [i, m.t, m.from_row, m.to_row]; })}
      ]
    });
    chart.on("click", function (p) {
      if (p.seriesIndex === 1) { showMessage(p.dataIndex); }
      else { var s = D.slices[p.dataIndex]; showThread(s[0]);
             show(D.threads[s[0]].name + ": " + s[3], {"from (µs)": s[1], "to (µs)": s[2],
                                                       "thread": D.threads[s[0]].name}); }
    });
  }

  // --- the mapping database as a tree ----------------------------------------------------
  function mapdb() {
    var el = document.getElementById("mapdb");
    if (!el || !D.mapdb.children.length) { return; }
    var leaves = 0;
    (function count(n) { if (!n.children || !n.children.length) { leaves++; } else { n.children.forEach(count); } })(D.mapdb);
    el.style.height = Math.max(200, Math.min(2400, 40 + 26 * leaves)) + "px";
    var chart = echarts.init(el, null, {renderer: "canvas"});
    charts.mapdb = chart;
    chart.setOption({
      tooltip: {trigger: "item", formatter: function (p) { return esc(p.data.full || p.name); }},
      series: [{type: "tree", data: [D.mapdb], top: 10, bottom: 10, left: 130, right: 330,
                initialTreeDepth: -1, symbolSize: 9, roam: true,
                label: {position: "left", verticalAlign: "middle", align: "right", fontSize: 12},
                leaves: {label: {position: "right", align: "left"}},
                expandAndCollapse: true, animationDuration: 200}]
    });
    chart.on("click", function (p) { show("mapping", {mapping: p.data.full || p.name}); });
  }

  // --- the IPC state machine, with this run's transitions -------------------------------
  function states() {
    var el = document.getElementById("states");
    if (!el) { return; }
    var chart = echarts.init(el, null, {renderer: "canvas"});
    charts.states = chart;
    var taken = D.states.edges.filter(function (e) { return e.count > 0; }).length;
    chart.setOption({
      tooltip: {formatter: function (p) {
        if (p.dataType === "edge") {
          return esc(p.data.source) + " → " + esc(p.data.target) + "<br>" + esc(p.data.why) +
            "<br>taken " + p.data.count + " times in this run";
        }
        return esc(p.name);
      }},
      series: [{
        type: "graph", layout: "none", roam: true, edgeSymbol: ["none", "arrow"], edgeSymbolSize: 8,
        symbolSize: [110, 34], symbol: "roundRect",
        label: {show: true, fontSize: 12},
        edgeLabel: {show: true, fontSize: 10, formatter: function (p) {
          return p.data.count ? p.data.short + " ×" + p.data.count : p.data.short; }},
        data: D.states.nodes.map(function (n) {
          return {name: n.name, x: n.x, y: n.y,
                  itemStyle: {color: n.visited ? "#c8e6c9" : "#eeeeee", borderColor: "#555", borderWidth: 1},
                  label: {color: "#111"}};
        }),
        links: D.states.edges.map(function (e) {
          return {source: e.source, target: e.target, short: e.short, why: e.why, count: e.count,
                  lineStyle: {width: e.count ? 3 : 1, color: e.count ? "#c62828" : "#bbb",
                              curveness: e.curve, opacity: e.count ? 1 : 0.7},
                  label: {color: e.count ? "#b71c1c" : "#999"}};
        })
      }],
      title: {text: taken + " of " + D.states.edges.length + " declared transitions taken",
              textStyle: {fontSize: 13, fontWeight: "normal"}, left: 10, top: 5}
    });
    chart.on("click", function (p) {
      if (p.dataType === "edge") {
        show("transition " + p.data.source + " → " + p.data.target,
             {why: p.data.why, "taken in this run": p.data.count});
      } else { show("state " + p.name, {state: p.name}); }
    });
  }

  function wire() {
    Array.prototype.forEach.call(document.querySelectorAll(".seq-msg"), function (g) {
      g.addEventListener("click", function () { showMessage(Number(g.getAttribute("data-msg"))); });
    });
    Array.prototype.forEach.call(document.querySelectorAll("#threads tr.thread"), function (r) {
      r.addEventListener("click", function () { showThread(Number(r.getAttribute("data-thread"))); });
    });
    Array.prototype.forEach.call(document.querySelectorAll("nav a"), function (a) {
      a.addEventListener("click", function () { setTimeout(resize, 50); });
    });
  }
  function resize() { Object.keys(charts).forEach(function (k) { charts[k].resize(); }); }

  function main() {
    timeline();
    mapdb();
    states();
    wire();
    window.addEventListener("resize", resize);
    window.l4simCharts = charts;
    document.body.setAttribute("data-ready", "1");
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", main); }
  else { main(); }
})();
