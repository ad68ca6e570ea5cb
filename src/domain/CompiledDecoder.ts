import { Either, Option, ParseResult, Schema, SchemaAST } from "effect"

/**
 * A Schema's decoder compiled into plain functions, for the payloads read at every pass (Marathon's app list, each
 * agent's services, the KV tree: thousands of objects). The Schema interpreter allocates an Either and its issue
 * bookkeeping per field; this reads the same AST with typeof checks, the Schema's own filters and its own
 * property transformations, and builds the same output.
 *
 * It only ever answers "this is the value the Schema gives" or "ask the Schema": any input it does not accept
 * whole is decoded by the Schema itself, so a refusal is the Schema's, with its words and its path, and a shape
 * this does not know (a Declaration, a Suspend, a transformation other than a Struct's defaults) is the Schema's
 * to read. Tests compare the two on mutated payloads.
 */

/** This reader does not accept the input: the Schema decides. */
const refused: unique symbol = Symbol("refused")
type Reader = (input: unknown) => unknown

const has = (input: object, key: PropertyKey): boolean => Object.prototype.hasOwnProperty.call(input, key)

const slowReader = (ast: SchemaAST.AST): Reader => {
  const decode = ParseResult.decodeUnknownEither(Schema.make(ast))
  return (input) => {
    const decoded = decode(input)
    return Either.isRight(decoded) ? decoded.right : refused
  }
}

/** A Union member that accepts objects (its output may be a new value) rather than primitives (the input itself). */
const isStructural = (ast: SchemaAST.AST): boolean => {
  switch (ast._tag) {
    case "Refinement":
      return isStructural(ast.from)
    case "StringKeyword":
    case "NumberKeyword":
    case "BooleanKeyword":
    case "UndefinedKeyword":
    case "Literal":
      return false
    default:
      return true
  }
}

const compile = (ast: SchemaAST.AST): Reader => {
  // what would change how the Schema reads this node: left to the Schema
  if (Option.isSome(SchemaAST.getParseOptionsAnnotation(ast)) || Option.isSome(SchemaAST.getDecodingFallbackAnnotation(ast))) {
    return slowReader(ast)
  }
  switch (ast._tag) {
    case "StringKeyword":
      return (input) => typeof input === "string" ? input : refused
    case "NumberKeyword":
      return (input) => typeof input === "number" ? input : refused
    case "BooleanKeyword":
      return (input) => typeof input === "boolean" ? input : refused
    case "UndefinedKeyword":
      return (input) => input === undefined ? input : refused
    case "UnknownKeyword":
    case "AnyKeyword":
      return (input) => input
    case "Literal": {
      const literal = ast.literal
      return (input) => input === literal ? input : refused
    }
    case "Refinement": {
      const from = compile(ast.from)
      const refinement = ast
      return (input) => {
        const value = from(input)
        return value !== refused && Option.isNone(refinement.filter(value, SchemaAST.defaultParseOption, refinement)) ? value : refused
      }
    }
    case "Union": {
      // primitives come out as they went in, and at most one member builds a value: whichever member accepts
      // the input, the output is the one the Schema gives
      if (ast.types.filter(isStructural).length > 1) return slowReader(ast)
      const members = ast.types.map(compile)
      return (input) => {
        for (const member of members) {
          const value = member(input)
          if (value !== refused) return value
        }
        return refused
      }
    }
    case "TupleType": {
      // Schema.Array: no fixed elements, one rest type
      if (ast.elements.length > 0 || ast.rest.length !== 1) return slowReader(ast)
      const item = compile(ast.rest[0]!.type)
      return (input) => {
        if (!Array.isArray(input)) return refused
        const out: Array<unknown> = new Array(input.length)
        for (let i = 0; i < input.length; i++) {
          const value = item(input[i])
          if (value === refused) return refused
          out[i] = value
        }
        return out
      }
    }
    case "TypeLiteral": {
      if (ast.propertySignatures.length === 0 && ast.indexSignatures.length === 0) {
        return (input) => input !== null && input !== undefined ? input : refused
      }
      const index = ast.indexSignatures[0]
      if (ast.indexSignatures.length > 1 || (index !== undefined && index.parameter._tag !== "StringKeyword")) return slowReader(ast)
      const properties = ast.propertySignatures.map((property) => ({
        name: property.name,
        optional: property.isOptional,
        read: compile(property.type)
      }))
      const expected = new Set<PropertyKey>(properties.map((property) => property.name))
      const readIndexed = index === undefined ? undefined : compile(index.type)
      return (input) => {
        if (typeof input !== "object" || input === null || Array.isArray(input)) return refused
        const record = input as Record<PropertyKey, unknown>
        const out: Record<PropertyKey, unknown> = {}
        for (const property of properties) {
          if (property.optional && !has(record, property.name)) continue
          const value = property.read(record[property.name])
          if (value === refused) return refused
          out[property.name] = value
        }
        if (readIndexed !== undefined) {
          for (const key of Object.keys(record)) {
            // an own "__proto__" key (JSON.parse makes one) would set the output's prototype: the Schema's call
            if (key === "__proto__") return refused
            const value = readIndexed(record[key])
            if (value === refused) return refused
            if (!expected.has(key)) out[key] = value
          }
        }
        return out
      }
    }
    case "Transformation": {
      // a Struct with `optionalWith(..., { default })`: its fields decoded, the defaults filled in, then checked
      // as the Type side, as the Schema does
      const transformation = ast.transformation
      if (transformation._tag !== "TypeLiteralTransformation" || ast.from._tag !== "TypeLiteral") return slowReader(ast)
      const from = compile(ast.from)
      const to = compile(ast.to)
      const steps = transformation.propertySignatureTransformations
      return (input) => {
        const value = from(input)
        if (value === refused) return refused
        // a fresh object of `from`'s own making: changed in place, as the Schema changes it
        const fields = value as Record<PropertyKey, unknown>
        for (const step of steps) {
          const found = step.decode(has(fields, step.from) ? Option.some(fields[step.from]) : Option.none())
          delete fields[step.from]
          if (Option.isSome(found)) fields[step.to] = found.value
        }
        return to(fields)
      }
    }
    default:
      return slowReader(ast)
  }
}

export interface CompiledDecoder<A> {
  /** the Schema's answer: the same value, or the Schema's own ParseError */
  (input: unknown): Either.Either<A, ParseResult.ParseError>
  /** the compiled reading alone: the value, or undefined when it leaves the input to the Schema (for tests) */
  readonly withoutSchema: (input: unknown) => Option.Option<A>
}

/** Decodes as `Schema.decodeUnknownEither(schema)` does, faster on the inputs it knows (see above). */
export const compiledDecoder = <A, I>(schema: Schema.Schema<A, I, never>): CompiledDecoder<A> => {
  const read = compile(schema.ast)
  const bySchema = Schema.decodeUnknownEither(schema)
  const decode = (input: unknown): Either.Either<A, ParseResult.ParseError> => {
    const value = read(input)
    return value === refused ? bySchema(input) : Either.right(value as A)
  }
  return Object.assign(decode, {
    withoutSchema: (input: unknown): Option.Option<A> => {
      const value = read(input)
      return value === refused ? Option.none() : Option.some(value as A)
    }
  })
}

/** Whether encoding changes anything: a transformation somewhere (or a shape this module does not read). */
const transforms = (ast: SchemaAST.AST): boolean => {
  switch (ast._tag) {
    case "StringKeyword":
    case "NumberKeyword":
    case "BooleanKeyword":
    case "UndefinedKeyword":
    case "UnknownKeyword":
    case "AnyKeyword":
    case "Literal":
      return false
    case "Refinement":
      return transforms(ast.from)
    case "Union":
      return ast.types.some(transforms)
    case "TupleType":
      return ast.elements.some((element) => transforms(element.type)) || ast.rest.some((rest) => transforms(rest.type))
    case "TypeLiteral":
      return ast.propertySignatures.some((property) => transforms(property.type)) ||
        ast.indexSignatures.some((index) => transforms(index.type))
    default:
      return true
  }
}

/**
 * Encodes as `Schema.encodeEither(schema)` does. A schema without transformations encodes a value to a checked
 * copy of itself, which is what reading it gives: that is done compiled (a cold sync encodes thousands of
 * registrations); a value it refuses, and any schema with a transformation, is the Schema's to encode.
 */
export const compiledEncoder = <A, I>(schema: Schema.Schema<A, I, never>): (value: A) => Either.Either<I, ParseResult.ParseError> => {
  const bySchema = Schema.encodeEither(schema)
  if (transforms(schema.ast)) return bySchema
  const read = compile(schema.ast)
  return (value) => {
    const encoded = read(value)
    return encoded === refused ? bySchema(value) : Either.right(encoded as I)
  }
}
