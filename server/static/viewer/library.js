// The template gallery (apply one into a new workflow) and the uploaded files (thumbnails;
// upload by drag and drop or the file chooser).

import { api } from "./api.js";

function entry(dataset, children) {
  const item = document.createElement("li");
  Object.assign(item.dataset, dataset);
  item.append(...children);
  return item;
}

async function showTemplates(onCreated, say) {
  const list = document.querySelector("#templates");
  const templates = (await api.templates()).items;
  list.replaceChildren(...templates.map((tpl) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `Apply: ${tpl.name}`;
    button.title = tpl.description || tpl.name;
    button.addEventListener("click", async () => {
      try { onCreated(await api.applyTemplate(tpl.id, tpl.name)); } catch (error) { say(error.message); }
    });
    return entry({ templateId: tpl.id }, [button]);
  }));
}

async function showFiles() {
  const list = document.querySelector("#files");
  const files = (await api.files()).items;
  list.replaceChildren(...files.map((file) => {
    const name = document.createElement("span");
    name.textContent = file.name;
    const parts = [name];
    if (file.thumbnailUrl) {  // images have one
      const img = document.createElement("img");
      img.src = file.thumbnailUrl;
      img.alt = file.name;
      img.width = 48;
      parts.unshift(img);
    }
    return entry({ fileId: file.id }, parts);
  }));
}

export async function setupLibrary(onCreated, say) {
  const uploadAll = async (fileList) => {
    if (!fileList.length) return;
    try { await api.upload(fileList); await showFiles(); } catch (error) { say(error.message); }
  };
  const zone = document.querySelector("#dropzone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    uploadAll(e.dataTransfer.files);
  });
  const input = document.querySelector("#file-input");
  input.addEventListener("change", () => uploadAll(input.files));
  try { await Promise.all([showTemplates(onCreated, say), showFiles()]); } catch (error) { say(error.message); }
}
