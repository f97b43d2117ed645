import { render } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { App } from "../App";
import { BackendProvider } from "../backend";
import { createMockBackend, type MockOptions } from "../mockBackend";

/** Renders the whole app on a deterministic mock backend. */
export function renderApp(options: MockOptions = {}) {
  const backend = createMockBackend(options);
  const user = userEvent.setup();
  const view = render(
    <BackendProvider backend={backend}>
      <App />
    </BackendProvider>,
  );
  return { backend, user, ...view };
}
