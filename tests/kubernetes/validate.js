#!/usr/bin/env node
// Validates Kubernetes objects against the Kubernetes API's OpenAPI schemas
// (the validators of the kubernetes-models package): required fields, types,
// enumerations and formats.  Reads YAML files (several documents, Lists too;
// "-" is standard input) and prints one line per object, and one per
// error; exits 1 if any object is invalid or of a kind it does not know.
//
//     node validate.js FILE... [-]
"use strict";

const fs = require("fs");
const path = require("path");
const yaml = require("js-yaml");

function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string") return null;
  const group = apiVersion.includes("/") ? apiVersion : `${apiVersion}`;
  let mod;
  try {
    mod = require(`kubernetes-models/${group}`);
  } catch (e) {
    return null;
  }
  return typeof mod[kind] === "function" ? mod[kind] : null;
}

function* objects(doc) {
  if (doc === null || doc === undefined) return;
  if (typeof doc.kind === "string" && doc.kind.endsWith("List") && Array.isArray(doc.items)) {
    for (const item of doc.items) yield* objects(item);
    return;
  }
  yield doc;
}

let bad = 0;
let count = 0;
const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: validate.js FILE... (- for standard input)");
  process.exit(2);
}
for (const file of files) {
  const text = fs.readFileSync(file === "-" ? 0 : file, "utf8");
  let docs;
  try {
    docs = yaml.loadAll(text);
  } catch (e) {
    console.log(`${file}: not valid YAML: ${e.message.split("\n")[0]}`);
    bad++;
    continue;
  }
  for (const doc of docs) {
    for (const obj of objects(doc)) {
      count++;
      const name = `${file}: ${obj.apiVersion} ${obj.kind} ${(obj.metadata || {}).name || "<no name>"}`;
      const Model = modelFor(obj.apiVersion, obj.kind);
      if (!Model) {
        console.log(`${name}: INVALID: no schema for this apiVersion and kind`);
        bad++;
        continue;
      }
      try {
        new Model(obj).validate();
        console.log(`${name}: valid`);
      } catch (e) {
        console.log(`${name}: INVALID: ${e.message}`);
        bad++;
      }
    }
  }
}
console.log(`validate.js: ${count - bad} of ${count} objects valid` + (bad ? `, ${bad} invalid` : ""));
process.exit(bad ? 1 : 0);
