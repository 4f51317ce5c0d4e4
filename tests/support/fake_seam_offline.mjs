// Seam's fake server with its seed data, but with the locks named in QWIP_OFFLINE_DEVICES
// (comma-separated device ids) offline: the fake has no HTTP route that disconnects a device.
import { env } from "node:process";
import { createFake } from "@seamapi/fake-seam-connect";

const fake = await createFake();
await fake.seed();
const database = fake.database.getState();
for (const device_id of (env.QWIP_OFFLINE_DEVICES ?? "").split(",").filter(Boolean)) {
  database.updateDevice({ device_id, properties: { online: false } });
}
await fake.startServer({ port: Number(env.PORT), signals: ["SIGINT", "SIGTERM"] });
