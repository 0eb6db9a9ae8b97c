"use strict";
// Placeholder until the dashboard's pages land: shows who the session is.
fetch("./session", { headers: { Accept: "application/json" } })
  .then((response) => response.json())
  .then((session) => {
    document.getElementById("app").textContent =
      session.project ? `Project ${session.project.name || session.project.id}` : "Not logged in";
  });
