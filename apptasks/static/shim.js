/* App Tasks screen shim: injected before any of the screen's own scripts.
 * Defines Fliplet.Page.onRemoteExecution (and AppTasks.onRemoteExecution), keeps
 * the console lines, and gives the runtime one entry point, __apptasks.invoke,
 * whose promise always resolves to a JSON string describing the outcome. */
(function () {
  "use strict";
  var MAX_LINES = 200;
  var MAX_LINE_LENGTH = 2000;
  var state = { handler: null, console: [], dropped: 0, firstError: null };

  function describe(value) {
    if (typeof value === "string") { return value; }
    if (value instanceof Error) { return value.name + ": " + value.message; }
    try {
      var text = JSON.stringify(value);
      return text === undefined ? String(value) : text;
    } catch (e) {
      return String(value);
    }
  }

  function keep(level, args) {
    if (state.console.length >= MAX_LINES) { state.dropped += 1; return; }
    var text = Array.prototype.map.call(args, describe).join(" ");
    if (text.length > MAX_LINE_LENGTH) { text = text.slice(0, MAX_LINE_LENGTH) + "..."; }
    state.console.push(level + ": " + text);
  }

  ["log", "info", "warn", "error", "debug"].forEach(function (level) {
    var original = console[level];
    console[level] = function () {
      keep(level, arguments);
      return original.apply(console, arguments);
    };
  });
  // A dialog would block the page and WebDriver with it; a task has nobody to
  // answer one, so dialogs become console lines with the "no" answer.
  window.alert = function (message) { keep("alert", [String(message)]); };
  window.confirm = function (message) { keep("confirm", [String(message)]); return false; };
  window.prompt = function (message) { keep("prompt", [String(message)]); return null; };

  window.addEventListener("error", function (event) {
    var text = event.error ? describe(event.error) : event.message;
    if (state.firstError === null) { state.firstError = text; }
    keep("error", ["Uncaught " + text]);
  });

  function onRemoteExecution(handler) {
    if (typeof handler !== "function") {
      throw new TypeError("onRemoteExecution expects a function, got " + typeof handler);
    }
    state.handler = handler;
  }

  function failure(thrown) {
    if (thrown instanceof Error) {
      return { ok: false, errorType: thrown.name || "Error",
               errorMessage: String(thrown.message), trace: String(thrown.stack || "") };
    }
    if (thrown && typeof thrown === "object") {
      return { ok: false, errorType: String(thrown.name || "Error"),
               errorMessage: String(thrown.message || describe(thrown)), trace: "" };
    }
    return { ok: false, errorType: "Error", errorMessage: describe(thrown), trace: "" };
  }

  var startTimer = window.setTimeout.bind(window);
  var stopTimer = window.clearTimeout.bind(window);

  function settle(outcome) {
    try {
      var text = JSON.stringify(outcome);
      return text;
    } catch (e) {
      return JSON.stringify({ ok: false, errorType: "ResultNotSerializable",
        errorMessage: "the handler's result cannot be turned into JSON: " + e.message,
        trace: "" });
    }
  }

  state.hasHandler = function () { return state.handler !== null; };

  state.invoke = function (payload, context) {
    if (state.handler === null) {
      // A script that failed before registering is the usual cause: say so.
      var cause = state.firstError === null ? "" :
        "; its script failed first with " + state.firstError;
      return Promise.resolve(JSON.stringify({ ok: false, errorType: "HandlerNotRegistered",
        errorMessage: "the screen loaded but never called " +
          "Fliplet.Page.onRemoteExecution(handler)" + cause, trace: "" }));
    }
    return new Promise(function (resolve) { resolve(state.handler(payload, context)); })
      .then(function (value) {
        return settle({ ok: true, result: value === undefined ? null : value });
      }, function (thrown) {
        return settle(failure(thrown));
      });
  };

  // The run's time limit, kept in the page: null when the handler has not
  // settled within `ms`. The timers are the page's own, taken before any of
  // the screen's scripts could replace them.
  state.invokeWithin = function (payload, context, ms) {
    return new Promise(function (resolve) {
      var timer = startTimer(function () { resolve(null); }, ms);
      state.invoke(payload, context).then(function (text) {
        stopTimer(timer);
        resolve(text);
      });
    });
  };

  Object.defineProperty(window, "__apptasks", { value: state });
  var fliplet = window.Fliplet = window.Fliplet || {};
  fliplet.Page = fliplet.Page || {};
  fliplet.Page.onRemoteExecution = onRemoteExecution;
  window.AppTasks = { onRemoteExecution: onRemoteExecution };
})();
