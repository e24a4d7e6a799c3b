// tessera: passkeys (WebAuthn). Signs in with a passkey from the login
// form's autofill (conditional UI) or the "Sign in with a passkey" button,
// completes a login's second factor with a passkey, confirms a sensitive
// action with one ("Confirm with a passkey"), creates an account with a
// passkey and no password, adds passkeys on /account/passkeys, and tells
// the browser's password manager which passkeys are gone (Signal API). Every check happens on the
// server; this file only carries the ceremony between the server and the
// browser. No inline code, so the strict Content-Security-Policy allows it.
(function () {
  "use strict";

  if (!window.PublicKeyCredential || !navigator.credentials) return;

  function toBytes(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) base64 += "=";
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function toText(buffer) {
    if (!buffer) return null;
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function post(url, csrf, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {})
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (json) {
        if (!response.ok) {
          var error = new Error(json.detail || ("The server answered " + response.status + "."));
          error.problem = json;
          throw error;
        }
        return json;
      });
    });
  }

  function show(element, message) {
    if (!element) return;
    element.textContent = message;
    element.hidden = !message;
  }

  // ---- Sign-in ---------------------------------------------------------

  function requestOptions(options) {
    var publicKey = options.publicKey;
    publicKey.challenge = toBytes(publicKey.challenge);
    (publicKey.allowCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
    return publicKey;
  }

  function assertionJson(credential) {
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: toText(credential.response.authenticatorData),
        clientDataJSON: toText(credential.response.clientDataJSON),
        signature: toText(credential.response.signature),
        userHandle: toText(credential.response.userHandle)
      },
      clientExtensionResults: credential.getClientExtensionResults ? credential.getClientExtensionResults() : {}
    };
  }

  function signIn(panel, mediation, signal) {
    var csrf = panel.getAttribute("data-csrf");
    var next = panel.getAttribute("data-next");
    var rpId = null;
    var ceremony = null;
    return post("/login/passkey/begin", csrf).then(function (options) {
      ceremony = options.ceremony;
      var publicKey = requestOptions(options);
      rpId = publicKey.rpId;
      var request = { publicKey: publicKey, signal: signal };
      if (mediation) request.mediation = mediation;
      return navigator.credentials.get(request);
    }).then(function (credential) {
      if (!credential) return null;
      var body = { ceremony: ceremony, credential: assertionJson(credential) };
      if (next) body.next = next;
      return post("/login/passkey/finish", csrf, body).catch(function (error) {
        // The passkey is not (or no longer) registered here: let the
        // password manager stop offering it.
        if (error.problem && error.problem.type === "/problems/passkey-unknown") signalUnknown(rpId, credential.id);
        throw error;
      });
    }).then(function (answer) {
      if (answer && answer.redirect) window.location.assign(answer.redirect);
    });
  }

  // A passkey of the account the server has in mind (a second factor, a
  // confirmation): begin answers options that list its passkeys only.
  function ownPasskey(panel, base, errorBox, button, done) {
    button.addEventListener("click", function () {
      var csrf = panel.getAttribute("data-csrf");
      show(errorBox, "");
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      var rpId = null;
      post(base + "/begin", csrf).then(function (options) {
        var publicKey = requestOptions(options);
        rpId = publicKey.rpId;
        return navigator.credentials.get({ publicKey: publicKey });
      }).then(function (credential) {
        return post(base + "/finish", csrf, { credential: assertionJson(credential) }).catch(function (error) {
          if (error.problem && error.problem.type === "/problems/passkey-unknown") signalUnknown(rpId, credential.id);
          throw error;
        });
      }).then(done).catch(function (error) {
        show(errorBox, error.name === "NotAllowedError" ? "No passkey was used." : error.message);
        button.disabled = false;
        button.removeAttribute("aria-busy");
      });
    });
    panel.hidden = false;
  }

  function enhanceLogin(panel) {
    var button = document.getElementById("passkey-button");
    var errorBox = document.getElementById("passkey-error");
    var pending = null;
    panel.hidden = false;

    function startConditional() {
      if (!PublicKeyCredential.isConditionalMediationAvailable) return;
      PublicKeyCredential.isConditionalMediationAvailable().then(function (available) {
        if (!available) return;
        pending = new AbortController();
        var mine = pending;
        signIn(panel, "conditional", mine.signal).catch(function (error) {
          if (mine.signal.aborted || error.name === "AbortError") return;
          if (error.name !== "NotAllowedError") show(errorBox, error.message);
        });
      }).catch(function () {});
    }

    button.addEventListener("click", function () {
      show(errorBox, "");
      if (pending) pending.abort();
      pending = null;
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      signIn(panel, null, undefined).catch(function (error) {
        show(errorBox, error.name === "NotAllowedError"
          ? "No passkey was used. Try again, or log in with your password."
          : error.message);
      }).then(function () {
        button.disabled = false;
        button.removeAttribute("aria-busy");
      });
    });
    startConditional();
  }

  // ---- Registration ----------------------------------------------------

  function creationOptions(options) {
    var publicKey = options.publicKey;
    publicKey.challenge = toBytes(publicKey.challenge);
    publicKey.user.id = toBytes(publicKey.user.id);
    (publicKey.excludeCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
    return publicKey;
  }

  function attestationJson(credential) {
    var response = credential.response;
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: {
        attestationObject: toText(response.attestationObject),
        clientDataJSON: toText(response.clientDataJSON),
        transports: response.getTransports ? response.getTransports() : undefined
      },
      clientExtensionResults: credential.getClientExtensionResults ? credential.getClientExtensionResults() : {}
    };
  }

  function defaultName() {
    var agent = navigator.userAgent;
    var browser = /Edg\//.test(agent) ? "Edge" : /Firefox\//.test(agent) ? "Firefox"
      : /Chrom(e|ium)\//.test(agent) ? "Chrome" : /Safari\//.test(agent) ? "Safari" : "Browser";
    var system = /Android/.test(agent) ? "Android" : /iPhone|iPad/.test(agent) ? "iOS"
      : /Mac OS X/.test(agent) ? "macOS" : /Windows/.test(agent) ? "Windows" : /Linux/.test(agent) ? "Linux" : "";
    return system ? browser + " on " + system : browser;
  }

  function enhanceAccount(form) {
    var errorBox = document.getElementById("passkey-add-error");
    var button = document.getElementById("passkey-add-button");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      show(errorBox, "");
      var csrf = form.getAttribute("data-csrf");
      var nameField = form.querySelector("[name=name]");
      var passwordField = form.querySelector("[name=current_password]");
      var name = nameField.value.trim();
      var begin = {};
      if (passwordField) begin.current_password = passwordField.value;
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      post("/account/passkeys/begin", csrf, begin).then(function (options) {
        return navigator.credentials.create({ publicKey: creationOptions(options) });
      }).then(function (credential) {
        return post("/account/passkeys/finish", csrf,
          { name: name, default_name: defaultName(), credential: attestationJson(credential) });
      }).then(function () {
        window.location.assign("/account/passkeys");
      }).catch(function (error) {
        show(errorBox, error.name === "InvalidStateError"
          ? "This authenticator already holds a passkey for your account."
          : error.name === "NotAllowedError" ? "No passkey was added." : error.message);
        button.disabled = false;
        button.removeAttribute("aria-busy");
      });
    });
  }

  // ---- Sign-up with a passkey (no password) ----------------------------

  function enhanceSignUp(panel) {
    var button = document.getElementById("passkey-sign-up-button");
    var errorBox = document.getElementById("passkey-sign-up-error");
    panel.hidden = false;
    button.addEventListener("click", function () {
      show(errorBox, "");
      var csrf = panel.getAttribute("data-csrf");
      var field = function (name) {
        var input = document.querySelector("form[action='/register'] [name=" + name + "]");
        return input ? input.value : "";
      };
      var body = { username: field("username").trim(), invite: field("invite"), email: field("email").trim() };
      if (!body.username) {
        show(errorBox, "Type the user name you want first.");
        document.getElementById("username").focus();
        return;
      }
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      var ceremony = null;
      post("/register/passkey/begin", csrf, body).then(function (options) {
        ceremony = options.ceremony;
        return navigator.credentials.create({ publicKey: creationOptions(options) });
      }).then(function (credential) {
        body.ceremony = ceremony;
        body.credential = attestationJson(credential);
        body.default_name = defaultName();
        return post("/register/passkey/finish", csrf, body);
      }).then(function (answer) {
        window.location.assign(answer.redirect || "/profile");
      }).catch(function (error) {
        show(errorBox, error.name === "NotAllowedError" ? "No passkey was created." : error.message);
        button.disabled = false;
        button.removeAttribute("aria-busy");
      });
    });
  }

  // ---- Signal API --------------------------------------------------------

  // The server does not know this passkey (removed, or never was): the
  // password manager should stop offering it.
  function signalUnknown(rpId, credentialId) {
    if (!rpId || !PublicKeyCredential.signalUnknownCredential) return;
    PublicKeyCredential.signalUnknownCredential({ rpId: rpId, credentialId: credentialId }).catch(function () {});
  }

  function signalAccepted(section) {
    var handle = section.getAttribute("data-user-handle");
    if (!handle || !PublicKeyCredential.signalAllAcceptedCredentials) return;
    var ids = (section.getAttribute("data-accepted-ids") || "").split(" ").filter(Boolean);
    PublicKeyCredential.signalAllAcceptedCredentials({
      rpId: section.getAttribute("data-rp-id"),
      userId: handle,
      allAcceptedCredentialIds: ids
    }).catch(function () {});
  }

  function enhance() {
    var panel = document.getElementById("passkey-sign-in");
    if (panel) enhanceLogin(panel);
    var form = document.getElementById("passkey-add");
    if (form) enhanceAccount(form);
    var section = document.getElementById("passkeys");
    if (section) signalAccepted(section);
    var signUp = document.getElementById("passkey-sign-up");
    if (signUp) enhanceSignUp(signUp);
    var second = document.getElementById("passkey-second-factor");
    if (second) {
      ownPasskey(second, "/login/second-factor/passkey", document.getElementById("passkey-second-factor-error"),
        document.getElementById("passkey-second-factor-button"), function (answer) {
          window.location.assign(answer.redirect || "/profile");
        });
    }
    var confirm = document.getElementById("passkey-confirm");
    if (confirm) {
      ownPasskey(confirm, "/account/confirm/passkey", document.getElementById("passkey-confirm-error"),
        document.getElementById("passkey-confirm-button"), function () {
          // Recently authenticated now (and under a new session ID): the
          // page again, with forms that need no password and a fresh token.
          window.location.reload();
        });
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", enhance);
  } else {
    enhance();
  }
})();
