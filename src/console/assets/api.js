// The API client of the console: same origin only (relative URLs), tokens in memory only
// (docs/SECURITY.md says why), one token refresh at a time (presenting a refresh token twice
// revokes the session: the refresh token rotates on every use).

/** An answer that was not 2xx: `status` and the problem JSON (`code`, `detail`) when there is one. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** The server could not be reached (down, restarting, network gone). */
export class Unreachable extends Error {}

export class Api {
  constructor() {
    this.access = null;
    this.refresh = null;
    this.email = null;
    this.refreshing = null;
    /** Called once when the session is over (logout, refresh token refused). */
    this.onSignedOut = () => {};
  }

  get signedIn() {
    return this.refresh !== null;
  }

  async register(email, password) {
    return this.call("POST", "/auth/users/register/", { json: { primary_email: email, password }, auth: false });
  }

  async login(email, password) {
    const tokens = await this.call("POST", "/auth/tokens/obtain/", { json: { primary_email: email, password }, auth: false });
    this.access = tokens.access;
    this.refresh = tokens.refresh;
    this.email = email;
  }

  async logout() {
    const refresh = this.refresh;
    this.forget();
    if (refresh) {
      try {
        await this.call("POST", "/auth/tokens/blacklist/", { json: { refresh }, auth: false });
      } catch (_) {
        // The session is forgotten here either way; it expires on the server by itself.
      }
    }
  }

  forget() {
    const was = this.refresh !== null;
    this.access = this.refresh = this.email = null;
    if (was) this.onSignedOut();
  }

  /** A fresh access token. `stale` is the token that failed: when another caller already
   *  replaced it, that one is used, so concurrent failures cost one refresh. */
  async renew(stale) {
    if (this.access && this.access !== stale) return this.access;
    if (!this.refresh) {
      this.forget();
      throw new ApiError(401, { code: "token_missing", detail: "log in again" });
    }
    if (!this.refreshing) {
      this.refreshing = (async () => {
        try {
          const tokens = await this.call("POST", "/auth/tokens/refresh/", { json: { refresh: this.refresh }, auth: false });
          this.access = tokens.access;
          this.refresh = tokens.refresh;
          return this.access;
        } catch (err) {
          if (err instanceof ApiError && err.status === 401) this.forget();
          throw err;
        } finally {
          this.refreshing = null;
        }
      })();
    }
    return this.refreshing;
  }

  /** One call: JSON in (`json`) or a FormData (`form`), JSON out (null for 204). An expired
   *  access token is renewed and the call made once more. */
  async call(method, path, { json, form, auth = true } = {}) {
    for (let attempt = 0; ; attempt++) {
      const headers = { Accept: "application/json" };
      let body;
      if (json !== undefined) {
        headers["Content-Type"] = "application/json";
        body = JSON.stringify(json);
      } else if (form !== undefined) {
        body = form;
      }
      const token = this.access;
      if (auth) {
        if (!token) throw new ApiError(401, { code: "token_missing", detail: "log in first" });
        headers.Authorization = `Bearer ${token}`;
      }
      let res;
      try {
        res = await fetch(path, { method, headers, body, credentials: "omit", cache: "no-store" });
      } catch (err) {
        throw new Unreachable(`the server cannot be reached (${err.message})`);
      }
      if (auth && res.status === 401 && attempt === 0 && this.refresh) {
        const problem = await problemOf(res);
        if (problem && problem.code === "token_expired") {
          await this.renew(token);
          continue;
        }
        throw new ApiError(401, problem);
      }
      if (!res.ok) throw new ApiError(res.status, await problemOf(res));
      if (res.status === 204) return null;
      return res.json();
    }
  }

  get(path) {
    return this.call("GET", path);
  }

  post(path, json) {
    return this.call("POST", path, { json: json === undefined ? {} : json });
  }

  /** A multipart upload through XMLHttpRequest, whose upload progress fetch cannot report:
   *  `onProgress(sent, total)` as the bytes go out. */
  async upload(path, form, onProgress) {
    for (let attempt = 0; ; attempt++) {
      const token = this.access;
      const { status, text } = await new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        xhr.open("POST", path);
        xhr.setRequestHeader("Authorization", `Bearer ${token}`);
        xhr.setRequestHeader("Accept", "application/json");
        xhr.upload.addEventListener("progress", (e) => {
          if (e.lengthComputable) onProgress(e.loaded, e.total);
        });
        xhr.addEventListener("load", () => resolve({ status: xhr.status, text: xhr.responseText }));
        xhr.addEventListener("error", () => reject(new Unreachable("the upload could not reach the server")));
        xhr.addEventListener("abort", () => reject(new Unreachable("the upload was aborted")));
        xhr.send(form);
      });
      const parsed = parseJson(text);
      if (status === 401 && attempt === 0 && parsed && parsed.code === "token_expired" && this.refresh) {
        await this.renew(token);
        continue;
      }
      if (status < 200 || status >= 300) throw new ApiError(status, parsed);
      return parsed;
    }
  }
}

async function problemOf(res) {
  try {
    return parseJson(await res.text());
  } catch (_) {
    return null;
  }
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch (_) {
    return null;
  }
}
