import { StrictMode } from "react";
import { createRoot } from "react-dom/client";

import { HeraldProvider } from "@herald/react";

import { App } from "./App.js";
import { devSession, pageUser } from "./devSession.js";

const user = pageUser(location.search);
const { api, client } = devSession(user, location.origin);
// For the end-to-end tests and for poking at it from the console.
(window as unknown as { herald: unknown }).herald = { client, api };

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <HeraldProvider client={client} api={api}>
        <App user={user} origin={location.origin} />
      </HeraldProvider>
    </StrictMode>,
  );
}
