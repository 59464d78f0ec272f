/* App Tasks browser client: the seed's Fliplet.App.Tasks calls over GraphQL.
 *
 *   <script src="https://apptasks.example/sdk/apptasks.js"></script>
 *   const tasks = AppTasks.connect({ token: "apt_..." });
 *   tasks.runWithResult("mailer", { to: "someone@example.com" }).then(...);
 *
 * connect() also installs the client as Fliplet.App.Tasks when nothing is
 * there yet; an existing Fliplet.App.Tasks is never replaced.
 *
 * Naming a task (update, remove, run, runWithResult): a JavaScript number is
 * the task's id, a string is its name, always; "42" means the task named "42".
 * Like the seed, the client answers ids (id, appId, pageId, taskId) as
 * numbers, so task.id can be passed back as it is.
 *
 * Every call returns a Promise. A failure rejects with an Error whose message
 * is the server's, plus .code (extensions.code, or NETWORK_ERROR, HTTP_<status>,
 * BAD_RESPONSE, BAD_USER_INPUT for arguments refused before sending),
 * .extensions (e.g. errorType and errorMessage of a failed run) and .errors
 * (the raw GraphQL error list, when there was one).
 *
 * subscribeLogs(options, onEntry) is the exception: it calls onEntry with each
 * new log entry (the shape getLogs answers) as it is written, over a WebSocket
 * (graphql-transport-ws), and returns a function that stops it. A dropped
 * connection is opened again, resuming after the last entry received, so no
 * entry is missed or repeated. Options: id (a task id), where: {type},
 * afterId (also replay the entries after this one), onError(error) for a
 * refusal that retrying cannot cure (a bad or revoked token: UNAUTHENTICATED),
 * onStatus(status) with "connecting", "live", "reconnecting" and "closed".
 *
 * Plain ES2017 without dependencies or a build step: one script tag loads it.
 */
(function () {
  "use strict";

  const TASK_FIELDS =
    "id name active frequency timezone timeout lastRunAt nextRunAt " +
    "createdAt updatedAt appId pageId";
  const TASK_REFERENCE = "$id: ID, $name: String";
  const RUN_ARGUMENTS =
    TASK_REFERENCE +
    ", $payload: JSON, $caller: JSON, $environment: Environment! = LIVE";
  const RUN_FIELD_ARGUMENTS =
    "id: $id, name: $name, payload: $payload, caller: $caller, " +
    "environment: $environment";

  const QUERIES = {
    create: `mutation($input: CreateTaskInput!) {
      createTask(input: $input) { ${TASK_FIELDS} } }`,
    get: `query { tasks { ${TASK_FIELDS} } }`,
    update: `mutation(${TASK_REFERENCE}, $input: UpdateTaskInput!) {
      updateTask(id: $id, name: $name, input: $input) { ${TASK_FIELDS} } }`,
    remove: `mutation(${TASK_REFERENCE}) {
      removeTask(id: $id, name: $name) { id name } }`,
    run: `mutation(${RUN_ARGUMENTS}) {
      runTask(${RUN_FIELD_ARGUMENTS}) { runId taskId queuedAt } }`,
    runWithResult: `mutation(${RUN_ARGUMENTS}) {
      runTaskWithResult(${RUN_FIELD_ARGUMENTS}) }`,
    getLogs: `query($id: ID, $limit: Int, $offset: Int! = 0, $where: LogFilter) {
      taskLogs(id: $id, limit: $limit, offset: $offset, where: $where) {
        count logs { id createdAt type taskId data } } }`
  };
  const RUN_OPTIONS = ["environment", "caller"];
  const LOG_OPTIONS = ["id", "limit", "offset", "where"];

  const LIVE_QUERIES = {
    // The newest entry now: a new subscription resumes after it, so that
    // entries written while the socket opens are not missed.
    newest: `query($id: ID, $where: LogFilter) {
      taskLogs(id: $id, limit: 1, where: $where) { logs { id } } }`,
    logs: `subscription($id: ID, $where: LogFilter, $afterId: ID) {
      taskLogs(id: $id, where: $where, afterId: $afterId) {
        id createdAt type taskId data } }`
  };
  const SUBSCRIBE_OPTIONS = ["id", "where", "afterId", "onError", "onStatus"];
  const LIVE_PROTOCOL = "graphql-transport-ws";
  // Close codes after which opening again cannot help: the token is refused
  // (4403), or the two ends do not agree on the protocol.
  const REFUSED = {
    4403: "UNAUTHENTICATED",
    4400: "PROTOCOL_ERROR",
    4401: "PROTOCOL_ERROR",
    4406: "PROTOCOL_ERROR",
    4409: "PROTOCOL_ERROR",
    4429: "PROTOCOL_ERROR"
  };
  const RECONNECT_DELAYS_MS = [250, 500, 1000, 2000, 5000, 10000];

  // document.currentScript is only set while this file first runs, so the
  // default endpoint is worked out now rather than in connect().
  const loadedFrom = document.currentScript && document.currentScript.src;
  const defaultEndpoint = loadedFrom ? new URL(loadedFrom).origin + "/graphql" : null;

  function clientError(message, code, extensions, errors) {
    const error = new Error(message);
    error.code = code;
    error.extensions = extensions || { code: code };
    error.errors = errors;
    return error;
  }

  function fromGraphQLErrors(errors) {
    const first = errors[0] || {};
    const extensions = first.extensions || {};
    const message = first.message || "App Tasks answered with an error";
    return clientError(message, extensions.code || "GRAPHQL_ERROR", extensions, errors);
  }

  function parseJson(text) {
    try {
      return JSON.parse(text);
    } catch (notJson) {
      return null;
    }
  }

  // A GraphQL error may come with a 4xx status (413 for a body that is too
  // large); its message says more than the status, so the body is read first.
  function readAnswer(response, text) {
    const body = parseJson(text);
    if (body && Array.isArray(body.errors) && body.errors.length) {
      throw fromGraphQLErrors(body.errors);
    }
    if (!response.ok) {
      const said = text.trim().slice(0, 200);
      const message =
        `App Tasks answered HTTP ${response.status} at ${response.url}` +
        (said ? ": " + said : "");
      throw clientError(message, "HTTP_" + response.status);
    }
    if (!body || !body.data) {
      const message = "App Tasks answered without GraphQL data at " + response.url;
      throw clientError(message, "BAD_RESPONSE");
    }
    return body.data;
  }

  async function graphql(endpoint, token, query, variables) {
    let response, text;
    try {
      response = await fetch(endpoint, {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          Authorization: "Bearer " + token
        },
        body: JSON.stringify({ query: query, variables: variables })
      });
      text = await response.text();
    } catch (failure) {
      // The browser hides why (CORS refusal, refused connection, DNS) from
      // scripts; its console says which.
      const message = `could not reach App Tasks at ${endpoint}: ${failure.message}`;
      throw clientError(message, "NETWORK_ERROR");
    }
    return readAnswer(response, text);
  }

  // The rule stated at the top of this file: numbers are ids, strings names.
  function taskReference(idOrName) {
    if (typeof idOrName === "number" && Number.isInteger(idOrName)) {
      return { id: String(idOrName) };
    }
    if (typeof idOrName === "string" && idOrName !== "") {
      return { name: idOrName };
    }
    const message =
      "a task is given by its id (a number) or its name (a string), not " +
      JSON.stringify(idOrName);
    throw clientError(message, "BAD_USER_INPUT");
  }

  // Options the server never sees (run options, getLogs filters) are checked
  // here, so that a misspelt key fails instead of being silently ignored.
  function onlyKnown(what, options, known) {
    const given = Object.assign({}, options);
    const unknown = Object.keys(given).filter((key) => !known.includes(key));
    if (unknown.length) {
      const message =
        `${what}: unknown option ${unknown.join(", ")}; ` +
        `expected one of ${known.join(", ")}`;
      throw clientError(message, "BAD_USER_INPUT");
    }
    return given;
  }

  function runVariables(idOrName, payload, options) {
    const extra = onlyKnown("run options", options, RUN_OPTIONS);
    return Object.assign(extra, taskReference(idOrName), { payload: payload });
  }

  // GraphQL IDs travel as strings; the seed's objects carry numbers.
  const ID_KEYS = ["id", "appId", "pageId", "taskId"];

  function withNumericIds(record) {
    if (!record || typeof record !== "object") { return record; }
    const copy = Object.assign({}, record);
    ID_KEYS.forEach(function (key) {
      if (typeof copy[key] === "string" && /^[0-9]+$/.test(copy[key])) {
        copy[key] = Number(copy[key]);
      }
    });
    return copy;
  }

  function socketUrl(endpoint) {
    const url = new URL(endpoint, location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  }

  // Log ids are 64-bit integers in strings: longer is larger, then by digits.
  function laterId(one, other) {
    if (one === null) { return other; }
    if (one.length !== other.length) { return one.length > other.length ? one : other; }
    return one > other ? one : other;
  }

  // A callback's exception is reported like an uncaught one, and does not
  // break the feed.
  function callSafely(callback, value) {
    try {
      callback(value);
    } catch (error) {
      setTimeout(() => { throw error; });
    }
  }

  function subscribeLogs(endpoint, token, options, onEntry) {
    if (typeof options === "function" && onEntry === undefined) {
      onEntry = options;
      options = {};
    }
    const settings = onlyKnown("subscribeLogs", options, SUBSCRIBE_OPTIONS);
    if (typeof onEntry !== "function") {
      throw clientError(
        "subscribeLogs: give a function to call with each entry", "BAD_USER_INPUT"
      );
    }
    const filter = { id: settings.id, where: settings.where };
    let cursor = settings.afterId == null ? null : String(settings.afterId);
    let socket = null;
    let retry = null;
    let failures = 0;
    let stopped = false;

    function status(name) {
      if (settings.onStatus) { callSafely(settings.onStatus, name); }
    }

    function send(ws, message) {
      if (ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify(message)); }
    }

    function subscribe(ws) {
      const variables = Object.assign({ afterId: cursor }, filter);
      const payload = { query: LIVE_QUERIES.logs, variables: variables };
      send(ws, { id: "logs", type: "subscribe", payload: payload });
      status("live");
    }

    function fail(error) {
      stop();
      if (settings.onError) {
        callSafely(settings.onError, error);
      } else {
        console.error(error);
      }
    }

    function receive(ws, message) {
      const payload = message.payload || {};
      if (message.type === "connection_ack") {
        failures = 0;
        if (cursor === null) {
          const ask = { query: LIVE_QUERIES.newest, variables: filter };
          send(ws, { id: "newest", type: "subscribe", payload: ask });
        } else {
          subscribe(ws);
        }
      } else if (message.type === "ping") {
        send(ws, { type: "pong" });
      } else if (message.type === "error") {
        fail(fromGraphQLErrors(payload));
      } else if (message.type === "next" && payload.errors) {
        if (message.id === "newest") {
          fail(fromGraphQLErrors(payload.errors));
        } else {
          ws.close();  // the server lost its feed (Redis): open again
        }
      } else if (message.type === "next" && message.id === "newest") {
        const newest = payload.data.taskLogs.logs[0];
        cursor = newest ? String(newest.id) : "0";
        subscribe(ws);
      } else if (message.type === "next") {
        const entry = payload.data.taskLogs;
        cursor = laterId(cursor, String(entry.id));
        callSafely(onEntry, withNumericIds(entry));
      } else if (message.type === "complete" && message.id === "logs") {
        ws.close();  // a feed never ends by itself: open again
      }
    }

    function closed(ws, event) {
      if (ws !== socket || stopped) { return; }
      socket = null;
      const refusal = REFUSED[event.code];
      if (refusal) {
        const message =
          `App Tasks closed the live logs (${event.code} ${event.reason}): ` +
          (event.code === 4403
            ? "the token is unknown or was revoked; connect with a valid token"
            : "the server does not speak " + LIVE_PROTOCOL);
        fail(clientError(message, refusal));
        return;
      }
      status("reconnecting");
      const last = RECONNECT_DELAYS_MS.length - 1;
      const delay = RECONNECT_DELAYS_MS[Math.min(failures, last)];
      failures += 1;
      retry = setTimeout(open, delay);
    }

    function open() {
      retry = null;
      status("connecting");
      const ws = (socket = new WebSocket(socketUrl(endpoint), LIVE_PROTOCOL));
      ws.onopen = () => send(ws, {
        type: "connection_init", payload: { authorization: "Bearer " + token }
      });
      ws.onmessage = (event) => {
        const message = parseJson(event.data);
        if (message && ws === socket) { receive(ws, message); }
      };
      ws.onclose = (event) => closed(ws, event);
    }

    function stop() {
      if (stopped) { return; }
      stopped = true;
      clearTimeout(retry);
      if (socket) {
        send(socket, { id: "logs", type: "complete" });
        socket.close(1000, "unsubscribed");
        socket = null;
      }
      status("closed");
    }

    open();
    return stop;
  }

  function createClient(endpoint, token) {
    // Each method is async so that a bad argument rejects like a server error
    // does: callers need only one error path.
    function call(name, pick, makeVariables) {
      return async function () {
        const variables = makeVariables.apply(null, arguments);
        return pick(await graphql(endpoint, token, QUERIES[name], variables));
      };
    }

    return {
      create: call(
        "create",
        (data) => withNumericIds(data.createTask),
        (task) => ({ input: task })
      ),
      get: call("get", (data) => data.tasks.map(withNumericIds), () => ({})),
      // The changes go as given: an omitted key stays as it is on the server,
      // while an explicit null (frequency: null) clears it.
      update: call("update", (data) => withNumericIds(data.updateTask), (idOrName, changes) =>
        Object.assign({ input: changes || {} }, taskReference(idOrName))
      ),
      remove: call("remove", (data) => withNumericIds(data.removeTask), taskReference),
      run: call("run", (data) => withNumericIds(data.runTask), runVariables),
      runWithResult: call(
        "runWithResult",
        (data) => data.runTaskWithResult,
        runVariables
      ),
      getLogs: call("getLogs", (data) => ({
        count: data.taskLogs.count,
        logs: data.taskLogs.logs.map(withNumericIds)
      }), (options) =>
        onlyKnown("getLogs", options, LOG_OPTIONS)
      ),
      subscribeLogs: (options, onEntry) =>
        subscribeLogs(endpoint, token, options, onEntry)
    };
  }

  function installAsFliplet(client) {
    const fliplet = (window.Fliplet = window.Fliplet || {});
    fliplet.App = fliplet.App || {};
    if (!fliplet.App.Tasks) {
      fliplet.App.Tasks = client;
    }
  }

  function connect(options) {
    const settings = options || {};
    const endpoint = settings.endpoint || defaultEndpoint;
    if (!endpoint) {
      const message =
        "AppTasks.connect: give an endpoint; it cannot be guessed when this " +
        "script was not loaded by a <script src> tag";
      throw clientError(message, "BAD_USER_INPUT");
    }
    if (!settings.token) {
      throw clientError("AppTasks.connect: give the app's token", "BAD_USER_INPUT");
    }

    const client = createClient(endpoint, settings.token);
    installAsFliplet(client);
    return client;
  }

  // Screens run by App Tasks already have an AppTasks object (the shim's
  // onRemoteExecution), so connect is added to it rather than replacing it.
  const AppTasks = (window.AppTasks = window.AppTasks || {});
  AppTasks.connect = connect;
})();
