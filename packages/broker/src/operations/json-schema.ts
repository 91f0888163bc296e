/**
 * The JSON Schema of a protobuf message in the proto3 JSON mapping (what `ListOperations` shows as a gRPC
 * operation's params): fields by their JSON names, int64 as a string or an integer, enums by name,
 * well-known types as their JSON forms.
 */
import { ScalarType, type DescEnum, type DescField, type DescMessage } from '@bufbuild/protobuf';
import type { JsonObject } from '@wanas/operations';

/** Nesting depth at which a (recursive) message is described as any object. */
const MAX_DEPTH = 8;

const WELL_KNOWN: Record<string, JsonObject> = {
  'google.protobuf.Struct': { type: 'object' },
  'google.protobuf.Value': {},
  'google.protobuf.ListValue': { type: 'array' },
  'google.protobuf.Timestamp': { type: 'string', format: 'date-time' },
  'google.protobuf.Duration': { type: 'string', pattern: '^-?[0-9]+(\\.[0-9]+)?s$' },
  'google.protobuf.FieldMask': { type: 'string' },
  'google.protobuf.Empty': { type: 'object', additionalProperties: false },
  'google.protobuf.Any': { type: 'object' },
  'google.protobuf.StringValue': { type: 'string' },
  'google.protobuf.BytesValue': { type: 'string', contentEncoding: 'base64' },
  'google.protobuf.BoolValue': { type: 'boolean' },
  'google.protobuf.DoubleValue': { type: 'number' },
  'google.protobuf.FloatValue': { type: 'number' },
  'google.protobuf.Int32Value': { type: 'integer' },
  'google.protobuf.UInt32Value': { type: 'integer' },
  'google.protobuf.Int64Value': { type: ['string', 'integer'] },
  'google.protobuf.UInt64Value': { type: ['string', 'integer'] },
};

function scalar(t: ScalarType): JsonObject {
  switch (t) {
    case ScalarType.STRING:
      return { type: 'string' };
    case ScalarType.BYTES:
      return { type: 'string', contentEncoding: 'base64' };
    case ScalarType.BOOL:
      return { type: 'boolean' };
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return { type: 'number' };
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.SINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return { type: ['string', 'integer'], pattern: '^-?[0-9]+$' };
    default:
      return { type: 'integer' };
  }
}

function message(m: DescMessage, depth: number): JsonObject {
  const wk = WELL_KNOWN[m.typeName];
  if (wk) return wk;
  if (depth > MAX_DEPTH) return { type: 'object' };
  const properties: JsonObject = {};
  for (const f of m.fields) properties[f.jsonName] = field(f, depth + 1);
  return { type: 'object', title: m.typeName, properties, additionalProperties: false };
}

/** A single value of a field, a list's item or a map's value: a scalar, an enum (by name) or a message. */
function value(
  v:
    | { kind: 'scalar'; scalar: ScalarType }
    | { kind: 'enum'; enum: DescEnum }
    | { kind: 'message'; message: DescMessage },
  depth: number,
): JsonObject {
  if (v.kind === 'scalar') return scalar(v.scalar);
  if (v.kind === 'enum') return { type: 'string', enum: v.enum.values.map((x) => x.name) };
  return message(v.message, depth);
}

function field(f: DescField, depth: number): JsonObject {
  switch (f.fieldKind) {
    case 'scalar':
      return value({ kind: 'scalar', scalar: f.scalar }, depth);
    case 'enum':
      return value({ kind: 'enum', enum: f.enum }, depth);
    case 'message':
      return value({ kind: 'message', message: f.message }, depth);
    case 'list':
      return { type: 'array', items: value(elementOf(f.listKind, f), depth) };
    case 'map':
      return { type: 'object', additionalProperties: value(elementOf(f.mapKind, f), depth) };
  }
}

/** What a list's items or a map's values are. */
function elementOf(
  kind: 'scalar' | 'enum' | 'message',
  f: { scalar?: ScalarType; enum?: DescEnum; message?: DescMessage },
): Parameters<typeof value>[0] {
  if (kind === 'scalar') return { kind, scalar: f.scalar! };
  if (kind === 'enum') return { kind, enum: f.enum! };
  return { kind, message: f.message! };
}

/** The JSON Schema of a message's proto3 JSON form. */
export function jsonSchemaOf(m: DescMessage): JsonObject {
  return message(m, 0);
}
