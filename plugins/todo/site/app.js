// The to-do page: plain JavaScript calling the API at api/todos (a Valor plug-in, answered in
// this tab once Valor.start() resolves; the same URLs work against `valor serve`).
import { Valor } from "./valor.js";

const list = document.getElementById("todos");
const banner = document.getElementById("error");

async function call(method, path, body) {
  const response = await fetch(`api/todos${path}`, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) {
    const detail = await response.json().then((b) => b.detail, () => response.statusText);
    throw new Error(`${response.status}: ${detail}`);
  }
  return response.status === 204 ? null : response.json();
}

function show(todos) {
  list.replaceChildren(
    ...todos.map((todo) => {
      const item = document.createElement("li");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = todo.done;
      box.id = `todo-${todo.id}`;
      box.addEventListener("change", () => act(() => call("PATCH", `/${todo.id}`, { done: box.checked })));
      const label = document.createElement("label");
      label.htmlFor = box.id;
      label.textContent = todo.title;
      const remove = document.createElement("button");
      remove.textContent = "Delete";
      remove.setAttribute("aria-label", `Delete ${todo.title}`);
      remove.addEventListener("click", () => act(() => call("DELETE", `/${todo.id}`)));
      item.append(box, label, remove);
      if (todo.done) item.classList.add("done");
      return item;
    }),
  );
  const left = todos.filter((todo) => !todo.done).length;
  document.getElementById("empty").hidden = todos.length > 0;
  document.getElementById("count").textContent = todos.length ? `${left} left` : "";
}

async function act(change) {
  // Any failure shows the banner; a success hides it and shows the list as the API has it.
  try {
    await change();
    show((await call("GET", "")).todos);
    banner.hidden = true;
  } catch (error) {
    banner.textContent = `Something went wrong (${error.message})`;
    banner.hidden = false;
  }
}

document.getElementById("add").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("title");
  const title = input.value;
  input.value = "";
  act(() => call("POST", "", { title }));
});

try {
  await Valor.start();
  await act(async () => {});
} catch (error) {
  banner.textContent = `The API could not start: ${error.message}`;
  banner.hidden = false;
}
