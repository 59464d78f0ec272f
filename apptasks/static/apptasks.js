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
      // Live logs need a WebSocket subscription the API does not offer yet; the
      // method exists so that callers learn that plainly, not from a TypeError.
      subscribeLogs: function () {
        const message =
          "subscribeLogs is not available yet: this App Tasks server has no " +
          "live logs over WebSocket; poll getLogs() meanwhile";
        throw clientError(message, "NOT_AVAILABLE");
      }
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
