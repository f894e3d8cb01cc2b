// tus-js-client, unchanged, against troupe's /files/ (driven by tests/api/tus_js.rs).
//
//   node upload.mjs ENDPOINT FILE CHUNK [MODULES_DIR]
//
// 1. Uploads FILE in CHUNK-byte PATCHes with `filename`/`filetype` metadata and stops after
//    the first chunk; a second Upload finds the first in the URL storage and resumes it the
//    way Uppy does (findPreviousUploads + resumeFromPreviousUpload): HEAD, then PATCH from the
//    server's offset, no new POST.
// 2. Uploads a small file with `overridePatchMethod` (POST + `X-HTTP-Method-Override: PATCH`).
// 3. Starts a small upload and terminates it (`abort(true)`, a DELETE); HEAD is then 404/410.
//
// Every request carries an `Origin`, as a browser's would (and `Authorization` when the
// environment's TUS_AUTHORIZATION gives one, through tus-js-client's `headers` option), and every answer must let a
// browser read the headers the client reads. Prints one JSON line of the upload
// URLs: {"url", "overridden", "terminated"}.
// tus-js-client is loaded from MODULES_DIR (default: this directory), where `npm ci` ran.

import assert from 'node:assert/strict'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const [endpoint, file, chunkArg, modulesArg] = process.argv.slice(2)
if (!endpoint || !file || !chunkArg) {
  console.error('usage: node upload.mjs ENDPOINT FILE CHUNK [MODULES_DIR]')
  process.exit(2)
}
const chunkSize = Number(chunkArg)
const modules = modulesArg || path.dirname(fileURLToPath(import.meta.url))
const tus = createRequire(path.join(path.resolve(modules), 'package.json'))('tus-js-client')

const ORIGIN = 'http://uppy.localhost'
const AUTHORIZATION = process.env.TUS_AUTHORIZATION
const size = fs.statSync(file).size
assert.ok(chunkSize < size, 'CHUNK must be smaller than the file, so there are several PATCHes')

/** The headers tus-js-client reads from each kind of answer, which CORS must expose. */
const READS = { POST: ['Location'], HEAD: ['Upload-Offset', 'Upload-Length'], PATCH: ['Upload-Offset'] }

/** Options shared by every Upload; `requests` collects `METHOD URL [offset]` lines. */
function options(requests, extra) {
  return {
    endpoint,
    chunkSize,
    metadata: { filename: 'tus-js.bin', filetype: 'application/x-tus-js' },
    headers: { Origin: ORIGIN, ...(AUTHORIZATION ? { Authorization: AUTHORIZATION } : {}) },
    removeFingerprintOnSuccess: true,
    onBeforeRequest(req) {
      const offset = req.getHeader('Upload-Offset')
      requests.push(`${req.getMethod()} ${req.getURL()}${offset == null ? '' : ` @${offset}`}`)
    },
    onAfterResponse(req, res) {
      assert.equal(res.getHeader('Access-Control-Allow-Origin'), '*', `${req.getMethod()} ${req.getURL()}`)
      const exposed = (res.getHeader('Access-Control-Expose-Headers') || '').toLowerCase()
      for (const name of READS[req.getMethod()] || []) {
        assert.ok(exposed.split(/\s*,\s*/).includes(name.toLowerCase()), `${name} not exposed`)
      }
    },
    ...extra,
  }
}

/** Starts `upload`; settles when it succeeds or fails, or when the caller settles `stop`. */
function run(upload, stop = {}) {
  return new Promise((resolve, reject) => {
    Object.assign(stop, { resolve, reject })
    upload.options.onSuccess = () => resolve('finished')
    upload.options.onError = reject
    upload.start()
  })
}

const storageDir = fs.mkdtempSync(path.join(os.tmpdir(), 'troupe-tus-js-'))
process.on('exit', () => fs.rmSync(storageDir, { recursive: true, force: true }))
const storage = new tus.FileUrlStorage(path.join(storageDir, 'urls.json'))

// 1a. The first upload stops after its first chunk.
const firstRequests = []
const stop = {}
let stoppedAt = null
const first = new tus.Upload(
  fs.createReadStream(file),
  options(firstRequests, {
    urlStorage: storage,
    onChunkComplete(_chunk, accepted) {
      if (stoppedAt === null) {
        stoppedAt = accepted
        first.abort().then(() => stop.resolve('stopped'), stop.reject)
      }
    },
  }),
)
assert.equal(await run(first, stop), 'stopped')
assert.equal(stoppedAt, chunkSize, `first chunk: ${firstRequests.join(', ')}`)
assert.deepEqual(
  firstRequests.map((r) => r.split(' ')[0]),
  ['POST', 'PATCH'],
)

// 1b. A second Upload of the same file finds it and resumes from the server's offset.
const secondRequests = []
const second = new tus.Upload(fs.createReadStream(file), options(secondRequests, { urlStorage: storage }))
const previous = await second.findPreviousUploads()
assert.equal(previous.length, 1, 'the first upload is in the URL storage')
assert.equal(previous[0].uploadUrl, first.url)
second.resumeFromPreviousUpload(previous[0])
assert.equal(await run(second), 'finished')
assert.equal(second.url, first.url, 'resumed, not created anew')
assert.equal(secondRequests[0], `HEAD ${first.url}`)
assert.equal(secondRequests[1], `PATCH ${first.url} @${chunkSize}`)
assert.ok(!secondRequests.some((r) => r.startsWith('POST')), secondRequests.join(', '))
assert.equal(secondRequests.length, 1 + Math.ceil((size - chunkSize) / chunkSize))

// 2. `overridePatchMethod` (an Uppy option too, for environments without PATCH): each PATCH
//    goes as a POST with `X-HTTP-Method-Override: PATCH`, which tus 1.0 says a server MUST obey.
const small = fs.readFileSync(file).subarray(0, 3 * 1024)
const overriddenRequests = []
const overridden = new tus.Upload(
  small,
  options(overriddenRequests, { chunkSize: 1024, overridePatchMethod: true }),
)
assert.equal(await run(overridden), 'finished')
assert.deepEqual(
  overriddenRequests.map((r) => r.split(' ')[0]),
  ['POST', 'POST', 'POST', 'POST'],
)

// 3. Termination: a small upload, deleted after its first chunk.
const doomedRequests = []
const doomedStop = {}
const doomed = new tus.Upload(
  small,
  options(doomedRequests, {
    chunkSize: 1024,
    storeFingerprintForResuming: false,
    onChunkComplete() {
      doomed.abort(true).then(() => doomedStop.resolve('terminated'), doomedStop.reject)
    },
  }),
)
assert.equal(await run(doomed, doomedStop), 'terminated')
assert.deepEqual(
  doomedRequests.map((r) => r.split(' ')[0]),
  ['POST', 'PATCH', 'DELETE'],
)
const head = await fetch(doomed.url, {
  method: 'HEAD',
  headers: { 'Tus-Resumable': '1.0.0', ...(AUTHORIZATION ? { Authorization: AUTHORIZATION } : {}) },
})
assert.ok([404, 410].includes(head.status), `HEAD after termination: ${head.status}`)

console.log(JSON.stringify({ url: first.url, overridden: overridden.url, terminated: doomed.url }))
