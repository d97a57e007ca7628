from .model import Model, ModelBuilder
