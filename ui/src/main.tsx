import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { BackendProvider } from "./backend";
import { createMockBackend } from "./mockBackend";
import "./styles.css";

// Inside Tauri talk to Rust; in a plain browser (`npm run dev`) use the simulated backend.
const backend =
  "__TAURI_INTERNALS__" in window
    ? (await import("./tauriBackend")).tauriBackend
    : createMockBackend({ simulate: true });

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <BackendProvider backend={backend}>
      <App />
    </BackendProvider>
  </StrictMode>,
);
